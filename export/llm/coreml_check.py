"""Parity of a CoreML LLM artifact: Apple's runtime on macOS, the MIL program on Linux.

macOS: the full harness (export/llm/parity.py) through CoreMLRunner's real prediction path.
Linux: the same harness and tolerances through the MIL interpreter (runtime/mil_interpreter.py,
coremltools' value inference, about a second per decode step for SmolLM2 on 2 cores), on a
shorter protocol so an export stays minutes long: LINUX_PROTOCOL below, recorded in the report.

What the Linux check proves: the saved package (its MIL ops, states, int4/int8 weights as
stored) computes, in fp32 math, the same logits as the eager model with the same weight
quantization simulated, over a real prefill and cached decode steps. What it does not prove:
Apple's fp16 kernels, Neural Engine/GPU placement, or that the package compiles and loads on a
device (that needs macOS / an iPhone).
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

from export.config import llm_config_from_dict
from export.tolerances import failures as tolerance_failures
from runtime.coreml_runner import coreml_runtime_available
from runtime.manifest import load_manifest

# teacher-forced: one 64-token window (32-token prefill, 31 decode calls); greedy: 2 prompts x 16 tokens
LINUX_PROTOCOL = {"WINDOWS": 1, "WINDOW_LEN": 64, "PROMPTS": 2, "GREEDY_TOKENS": 16}


def check_coreml_parity(folder: Path, prepared=None) -> dict:
    from export.llm import parity
    from export.manifest import update_manifest

    if coreml_runtime_available():
        report = parity.check_llm_parity(folder, prepared)
    else:
        with mock.patch.multiple(parity, **LINUX_PROTOCOL):
            report = parity.check_llm_parity(folder, prepared)
        report["reference"] = (
            "coremltools int4 per-block / int8 weights simulated, fp32 activations (export/llm/quant_coreml.py)"
        )
        report["engine"] = "mil-interpreter (coremltools value inference, fp32; not Apple's runtime)"
        report["protocol"] = dict(LINUX_PROTOCOL)
    manifest = load_manifest(folder)
    if (manifest.get("executorch_coreml_delegate") or {}).get("file"):
        from export.data.text import token_windows
        from export.llm.pipeline import prepare_model

        prepared = prepared or prepare_model(llm_config_from_dict(manifest["config"]))
        window = token_windows(prepared.checkpoint.tokenizer, "parity", LINUX_PROTOCOL["WINDOW_LEN"], 1)[0]
        spec = manifest["executorch_coreml_delegate"]
        delegate = check_delegate_parity(
            folder / spec["file"], prepared.float_model, window, spec["weight_quantization"]
        )
        report["executorch_coreml_delegate"] = delegate
        report["passed"] = report["passed"] and delegate["passed"]
        m = delegate["metrics"]
        print(
            f"  CoreML-delegate .pte [{'PASS' if delegate['passed'] else 'FAIL'}]: cosine min {m['logits_cosine_min']:.4f} mean {m['logits_cosine_mean']:.5f}, "
            f"SQNR {m['logits_sqnr_db']:.1f} dB, top-1 {m['top1_agreement']:.3f} over {m['positions']} positions"
        )
    update_manifest(folder, parity=report)
    return report


# The delegate's stored program interpreted in fp32 against the same weights simulated: nothing
# but summation order separates them (real SmolLM2: cosine min 0.999999, 61.8 dB, top-1 1.000),
# so the bar is far above the harness's; a wrong weight simulation (an fp16 table taken for
# int4) measured 20 dB / cosine min 0.96 and fails it.
DELEGATE_TOLERANCES = {
    "logits_cosine_min": ("min", 0.999),
    "logits_sqnr_db": ("min", 40.0),
    "top1_agreement": ("min", 0.95),
}


def check_delegate_parity(pte: Path, float_model, tokens, weight_quantization: dict, prefill: int = 32) -> dict:
    """The CoreML delegate inside `pte` (its mlpackage unpacked, MIL program interpreted in fp32)
    against eager with the delegate's int4 weights simulated: prefill, then one cached decode
    call per token of `tokens` [L], judged by DELEGATE_TOLERANCES."""
    import tempfile

    import numpy as np
    import torch

    from export.backends.coreml import delegate_package
    from export.llm.quant_coreml import simulate_coreml_delegate_weights
    from export.metrics import sqnr_db
    from runtime.coreml_runner import causal_mask
    from runtime.mil_interpreter import MILInterpreter

    wq = weight_quantization
    reference = simulate_coreml_delegate_weights(float_model, wq["block_size"], wq["weight_threshold"]).eval()
    with torch.no_grad():
        ref = reference(tokens[None])[0, prefill - 1 : -1].double()  # [L - prefill, vocab]
    with tempfile.TemporaryDirectory(prefix="handheld-delegate-") as tmp:
        mil = MILInterpreter(delegate_package(pte, Path(tmp)))
        names = list(mil.fn.inputs)
        token_name = next(n for n in names if "token" in n)
        mask_name = next(n for n in names if "mask" in n)
        rows = []
        for pos, end in [(0, prefill)] + [(i, i + 1) for i in range(prefill, len(tokens) - 1)]:
            out = mil.run(
                {
                    token_name: tokens[None, pos:end].numpy().astype(np.int32),
                    mask_name: causal_mask(pos, end - pos).numpy(),
                }
            )
            rows.append(torch.from_numpy(np.asarray(next(iter(out.values())), dtype=np.float64)).reshape(-1))
    art = torch.stack(rows)
    cos = torch.nn.functional.cosine_similarity(art, ref, dim=-1)
    metrics = {
        "logits_cosine_min": float(cos.min()),
        "logits_cosine_mean": float(cos.mean()),
        "logits_sqnr_db": sqnr_db(ref, art),
        "top1_agreement": float((art.argmax(-1) == ref.argmax(-1)).double().mean()),
        "positions": len(rows),
    }
    judged = DELEGATE_TOLERANCES
    failures = tolerance_failures(metrics, judged)
    return {
        "passed": not failures,
        "failures": failures,
        "metrics": metrics,
        "tolerances": judged,
        "reference": "eager, int4 per-block weights as the delegate's quantizer stores them (quant_coreml.simulate_coreml_delegate_weights), fp32 activations",
        "engine": "the delegate's mlpackage unpacked from the .pte, MIL program interpreted in fp32 (not Apple's runtime)",
    }
