"""Handheld's ONNX artifact against onnxruntime-genai's model builder, same checkpoint, same run.

The builder (`python -m onnxruntime_genai.models.builder -i HF_FOLDER -o DIR -p int4 -e cpu`)
needs an HF folder, so a GGUF checkpoint (the demo SmolLM2) is first written out with
transformers' save_pretrained. Its int4 CPU defaults are block 32, symmetric, accuracy_level 4.

Speed: each (artifact, threads) runs in its own worker process with the protocol of
export/llm/bench.py (64-token prompt, 128 greedy decode steps, median of runs). Handheld's
artifact goes through its Runner (Python loop, onnxruntime session); the builder's model
through onnxruntime-genai's own C++ generator (its intended runtime).
Perplexity: teacher-forced over the parity harness's held-out Wikipedia windows (prefill 32,
then one token per call), identical for both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from export.llm.bench import DECODE_STEPS, PROMPT_TOKENS, _size_mb

GENAI_BASELINE = Path("artifacts/baseline/genai_builder_smollm2_int4")


def write_hf_folder(checkpoint: str | None, out: Path) -> Path:
    """GGUF or HF checkpoint -> a plain HF safetensors folder (what the builder reads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from export.llm.checkpoint import _resolve

    folder, kwargs = _resolve(checkpoint)
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    # a GGUF-loaded model is flagged as quantized and refuses save_pretrained: rebuild it from
    # its config (quantization flag dropped) and copy the dequantized fp32 weights over
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    model.load_state_dict(loaded.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_genai_baseline(out: Path = GENAI_BASELINE, checkpoint: str | None = None) -> Path:
    """Run onnxruntime-genai's builder (int4, CPU) on the checkpoint; return the model folder."""
    from export.errors import HandheldError

    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        raise HandheldError("onnxruntime-genai is not installed", "pip install -r requirements.lock (it pins onnxruntime-genai)") from None
    out = Path(out)
    hf = out.parent / (out.name + ".hf")
    write_hf_folder(checkpoint, hf)
    cache = out.parent / (out.name + ".cache")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out), "-p", "int4", "-e", "cpu", "-c", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent)
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0 or not (out / "genai_config.json").is_file():
        raise HandheldError(f"onnxruntime-genai's builder failed: {proc.stderr.strip().splitlines()[-1:]}", "check the checkpoint is a Llama-family HF model")
    return out


class GenaiStepper:
    """onnxruntime-genai generator behind the `step(tokens, pos) -> logits[vocab]` interface."""

    def __init__(self, model_dir: Path, threads: int | None = None):
        import onnxruntime_genai as og

        folder = Path(model_dir)
        if threads:
            folder = _with_threads(folder, threads)
        self.og = og
        self.model = og.Model(str(folder))
        self.params = og.GeneratorParams(self.model)
        self.params.set_search_options(max_length=512, do_sample=False)
        self.generator = None
        self.length = 0

    def __call__(self, tokens, pos: int):
        import numpy as np
        import torch

        if pos == 0 or self.generator is None:
            self.generator = self.og.Generator(self.model, self.params)
            self.length = 0
        if pos != self.length:
            raise ValueError(f"genai stepper: position {pos} after {self.length} tokens")
        ids = np.asarray(torch.as_tensor(tokens).reshape(-1).tolist(), dtype=np.int32)
        self.generator.append_tokens(ids)
        self.length += len(ids)
        logits = np.asarray(self.generator.get_logits(), dtype=np.float32)  # [1, (S,) vocab]
        return torch.from_numpy(logits.reshape(-1, logits.shape[-1])[-1].copy())


def _with_threads(folder: Path, threads: int) -> Path:
    """A sibling copy of the builder folder whose genai_config pins intra-op threads (files hard-linked)."""
    dst = folder.parent / f".{folder.name}.t{threads}"
    if not dst.exists():
        dst.mkdir()
        for f in folder.iterdir():
            if f.name != "genai_config.json":
                os.link(f, dst / f.name)
    cfg = json.loads((folder / "genai_config.json").read_text())
    opts = cfg["model"]["decoder"].setdefault("session_options", {})
    opts["intra_op_num_threads"], opts["inter_op_num_threads"] = threads, 1
    (dst / "genai_config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def _genai_worker(model_dir: str, threads: int, runs: int) -> dict:
    from export.llm.bench import time_generation

    return time_generation(GenaiStepper(Path(model_dir), threads), threads, runs, PROMPT_TOKENS, DECODE_STEPS)


def _measure_genai(model_dir: Path, threads: int, runs: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    code = f"import json; from export.llm.bench_onnx import _genai_worker; print('RESULT', json.dumps(_genai_worker({str(model_dir)!r}, {threads}, {runs})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    from export.errors import HandheldError

    raise HandheldError(f"genai benchmark worker failed on {model_dir}: {proc.stderr.strip().splitlines()[-1:]}", "rebuild the builder baseline")


def teacher_forced_perplexity(step, tokenizer) -> tuple[float, int]:
    """The parity harness's windows and protocol (prefill, then one token per call)."""
    import torch

    from export.data.text import token_windows
    from export.llm.parity import PREFILL_LEN, WINDOW_LEN, WINDOWS, _perplexity, _teacher_forced

    windows = token_windows(tokenizer, "parity", WINDOW_LEN, WINDOWS)
    logits = torch.cat([_teacher_forced(step, w) for w in windows])
    targets = torch.cat([w[PREFILL_LEN:] for w in windows])
    return _perplexity(logits, targets), int(targets.numel())


def bench_vs_genai(folder: Path, genai_dir: Path, threads=(1, 2), runs: int = 3) -> dict:
    from tqdm import tqdm

    from export.llm.bench import _measure
    from export.llm.checkpoint import load_checkpoint
    from export.manifest import load_manifest
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    folder, genai_dir = Path(folder), Path(genai_dir)
    manifest = load_manifest(folder)
    targets = {"handheld_onnx": folder, "genai_builder_int4": genai_dir}
    results: dict = {name: {"size_mb": _size_mb(t), "path": str(t), "by_threads": {}} for name, t in targets.items()}
    for name, t in tqdm([(n, t) for n in targets for t in threads], desc="bench vs genai", unit="config"):
        if name == "handheld_onnx":
            results[name]["by_threads"][str(t)] = _measure(targets[name], t, runs, PROMPT_TOKENS, DECODE_STEPS)
        else:
            results[name]["by_threads"][str(t)] = _measure_genai(targets[name], t, runs)
    tokenizer = load_checkpoint(manifest["config"].get("checkpoint")).tokenizer
    results["handheld_onnx"]["perplexity"], n = teacher_forced_perplexity(LLMStepper(open_runner(folder, threads=2)), tokenizer)
    results["genai_builder_int4"]["perplexity"], _ = teacher_forced_perplexity(GenaiStepper(genai_dir, 2), tokenizer)
    report = {
        "kind": "llm",
        "artifact": str(folder),
        "baseline": str(genai_dir),
        "rotation": manifest["config"].get("rotation"),
        "prompt_tokens": PROMPT_TOKENS,
        "decode_steps": DECODE_STEPS,
        "perplexity_tokens": n,
        "results": results,
        "ratios_vs_genai_builder": {
            str(t): {
                m: results["handheld_onnx"]["by_threads"][str(t)][m] / results["genai_builder_int4"]["by_threads"][str(t)][m]
                for m in ("prefill_tok_s", "decode_tok_s")
            }
            for t in threads
        },
    }
    print_table(report)
    return report


def print_table(report: dict) -> None:
    print(f"\nONNX vs onnxruntime-genai builder: {report['prompt_tokens']}-token prompt, {report['decode_steps']} decode steps, median of runs")
    print(f"{'artifact':20} {'thr':>3} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak RSS MB':>12} {'size MB':>8} {'wiki PPL':>9}")
    for name, r in report["results"].items():
        for t, m in r["by_threads"].items():
            print(f"{name:20} {t:>3} {m['prefill_tok_s']:14.1f} {m['decode_tok_s']:13.1f} {m['peak_rss_mb']:12.0f} {r['size_mb']:8.1f} {r['perplexity']:9.2f}")
    for t, ratio in report["ratios_vs_genai_builder"].items():
        print(f"handheld / genai builder @ {t} thread(s): prefill {ratio['prefill_tok_s']:.2f}x, decode {ratio['decode_tok_s']:.2f}x")
