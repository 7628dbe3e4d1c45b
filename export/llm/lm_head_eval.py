"""Which lm_head an ExecuTorch LLM should ship: int8 per channel or 4-bit per group of 32, each
by torchao's round-to-nearest or GPTQ (on the quantized blocks' outputs), measured on the same
held-out tokens with everything else as shipped (SpinQuant, GPTQ 8da4w blocks, int8 embedding).

Perplexity is the eager model with exactly the artifact's quantization (torchao's integers,
dequantized once; `handheld parity` holds every artifact to it within 3%), on `WINDOWS` windows
of `SEQ_LEN` tokens of the `evaluation` split, the `handheld eval llm` protocol. The speed side
is `handheld bench --profile` on the exported artifacts (the lm_head's GEMM per decode step).

    python -m export.llm.lm_head_eval OUT.json
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

WINDOWS, SEQ_LEN = 8, 512


@torch.no_grad()
def perplexity(model, windows: torch.Tensor) -> float:
    nll = [torch.nn.functional.cross_entropy(model(w[None])[0, :-1].double(), w[1:], reduction="sum") for w in windows]
    return math.exp(float(sum(nll)) / (windows.shape[0] * (windows.shape[1] - 1)))


def measure() -> dict:
    from export.config import LLMExportConfig
    from export.data.text import token_windows
    from export.llm.checkpoint import load_checkpoint
    from export.llm.pipeline import gptq_calibration
    from export.llm.quantize import quantize_llm, with_cached_dequantized_weights
    from export.rotation import apply_rotation

    cfg = LLMExportConfig()
    quant = cfg.quant.for_backend("executorch")
    ck = load_checkpoint(cfg.checkpoint)
    rotated = apply_rotation(copy.deepcopy(ck.model), cfg.rotation, cfg.rotation_file, quantized_kv=False)
    calibration = gptq_calibration(ck, quant)
    windows = token_windows(ck.tokenizer, "evaluation", SEQ_LEN, WINDOWS)
    report = {"tokens": int(windows.numel()), "fp32": perplexity(rotated, windows), "lm_head": {}}
    print(f"fp32 (rotated, unquantized): {report['fp32']:.3f}")
    for bits in (8, 4):
        for gptq in (False, True):
            model = copy.deepcopy(rotated)
            q = quantize_llm(model, dataclasses.replace(quant, output_bits=bits), calibration, gptq_lm_head=gptq)
            ppl = perplexity(with_cached_dequantized_weights(model), windows)
            name = f"int{bits}-{'gptq' if gptq else 'rtn'}"
            report["lm_head"][name] = {
                "perplexity": ppl,
                "vs_fp32": ppl / report["fp32"],
                "lm_head_weight_sqnr_db": q["lm_head_weight_sqnr_db"],
                "lm_head_mb": model.lm_head.weight.numel() * bits / 8 / 2**20,
            }
            print(f"lm_head {name}: perplexity {ppl:.3f} ({ppl / report['fp32']:.3f}x fp32)", flush=True)
    base = report["lm_head"]["int8-rtn"]["perplexity"]
    for r in report["lm_head"].values():
        r["vs_int8_rtn"] = r["perplexity"] / base
    return report


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(measure(), indent=1) + "\n")
