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

from export.llm.bench import DECODE_STEPS, PROMPT_TOKENS, _size_mb, median_runs

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
    from runtime.errors import HandheldError

    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        raise HandheldError(
            "onnxruntime-genai is not installed", "pip install -r requirements.lock (it pins onnxruntime-genai)"
        ) from None
    # every path absolute: the builder runs in out's parent and takes an `-i` it cannot find
    # from there for a hub model id (then asks for a token)
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    hf = out.parent / (out.name + ".hf")
    write_hf_folder(checkpoint, hf)
    cache = out.parent / (out.name + ".cache")
    cmd = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(hf),
        "-o",
        str(out),
        "-p",
        "int4",
        "-e",
        "cpu",
        "-c",
        str(cache),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=out.parent, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0 or not (out / "genai_config.json").is_file():
        log = out.parent / (out.name + ".builder.log")
        log.write_text(proc.stdout + proc.stderr)
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise HandheldError(
            f"onnxruntime-genai's builder failed on {hf} (exit {proc.returncode}): {last}",
            f"read the builder's full log in {log}; the input folder must hold config.json, safetensors and tokenizer files",
        )
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
    from export.worker import run_worker

    return run_worker(
        "export.llm.bench_onnx:_genai_worker",
        Path(model_dir),
        threads,
        runs,
        what=f"the genai baseline {model_dir}",
        fix="rebuild the builder baseline",
    )


def teacher_forced_perplexity(step, tokenizer) -> tuple[float, int]:
    """The parity harness's windows and protocol (prefill, then one token per call)."""
    import torch

    from export.data.text import token_windows
    from export.llm.parity import PREFILL_LEN, WINDOW_LEN, WINDOWS, _perplexity, _teacher_forced

    windows = token_windows(tokenizer, "parity", WINDOW_LEN, WINDOWS)
    logits = torch.cat([_teacher_forced(step, w) for w in windows])
    targets = torch.cat([w[PREFILL_LEN:] for w in windows])
    return _perplexity(logits, targets), int(targets.numel())


def without_online_hadamards(folder: Path, out: Path) -> Path | None:
    """A TIMING-ONLY copy of an ONNX LLM artifact with R4 taken out of the graph: each
    Reshape -> MatMul(down_rotate constants) -> Reshape chain on down_proj's input is bypassed.
    down_proj still holds R4's transpose, so its logits are wrong; it measures what the online
    Hadamard costs per step and nothing else. None when the graph has no R4."""
    import onnx

    from export.manifest import write_manifest
    from runtime.manifest import load_manifest

    manifest = load_manifest(folder)
    model = onnx.load(str(Path(folder) / manifest["model_file"]))
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    drop, rewire = [], {}
    for n in nodes:
        if n.op_type != "MatMul" or not any("down_rotate" in i for i in n.input) or "down_rotate" in n.input[0]:
            continue  # the chain starts at x @ S_p (x first); the [m, m] factor MatMul follows it
        first = producer.get(n.input[0])
        chain, last = [n], n
        while len(consumers.get(last.output[0], [])) == 1 and consumers[last.output[0]][0].op_type == "MatMul":
            last = consumers[last.output[0]][0]
            chain.append(last)
        after = consumers.get(last.output[0], [])
        if first is None or first.op_type != "Reshape" or len(after) != 1 or after[0].op_type != "Reshape":
            continue
        drop += [first, *chain, after[0]]
        rewire[after[0].output[0]] = first.input[0]
    if not drop:
        return None
    for n in drop:
        model.graph.node.remove(n)
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name in rewire:
                n.input[i] = rewire[name]
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    onnx.save(model, str(out / manifest["model_file"]))
    shutil.copy(Path(folder) / manifest["tokenizer"]["file"], out / manifest["tokenizer"]["file"])
    fields = {
        k: v
        for k, v in manifest.items()
        if k not in ("format_version", "kind", "created_unix", "toolchain", "files", "parity")
    }
    write_manifest(
        out, "llm", **fields, timing_only=f"R4 removed from {folder} ({len(rewire)} layers): logits are wrong"
    )
    return out


def bench_vs_genai(
    folder: Path, genai_dir: Path, threads=(1, 2), runs: int = 3, r4_cost: bool = True, passes: int = 3
) -> dict:
    """`runs` interleaved rounds: every artifact x thread count once per round, each in its own
    process timing `passes` passes (median), then the median over rounds, so load on the shared
    machine drifts over all of them alike. With r4_cost, a timing-only copy without the online
    Hadamard R4 joins the rounds."""
    from export.llm.bench import _measure
    from export.llm.checkpoint import load_checkpoint
    from export.progress import tqdm
    from runtime.generate import LLMStepper
    from runtime.manifest import load_manifest
    from runtime.runner import open_runner

    folder, genai_dir = Path(folder), Path(genai_dir)
    manifest = load_manifest(folder)
    targets = {"handheld_onnx": folder, "genai_builder_int4": genai_dir}
    no_r4 = without_online_hadamards(folder, folder.parent / f".{folder.name}.no-r4") if r4_cost else None
    if no_r4 is not None:
        targets["handheld_onnx_without_r4"] = no_r4
    results: dict = {name: {"size_mb": _size_mb(t), "path": str(t), "by_threads": {}} for name, t in targets.items()}
    single: dict = {(name, t): [] for name in targets for t in threads}
    configs = [(n, t) for _ in range(runs) for n in targets for t in threads]
    for name, t in tqdm(configs, desc="bench vs genai (interleaved)", unit="run"):
        measure = (
            _measure_genai
            if name == "genai_builder_int4"
            else lambda target, th, r: _measure(target, th, r, PROMPT_TOKENS, DECODE_STEPS)
        )
        single[(name, t)].append(measure(targets[name], t, passes))
    for (name, t), items in single.items():
        results[name]["by_threads"][str(t)] = median_runs(items)
    tokenizer = load_checkpoint(manifest["config"].get("checkpoint")).tokenizer
    results["handheld_onnx"]["perplexity"], n = teacher_forced_perplexity(
        LLMStepper(open_runner(folder, threads=2)), tokenizer
    )
    results["genai_builder_int4"]["perplexity"], _ = teacher_forced_perplexity(GenaiStepper(genai_dir, 2), tokenizer)
    if no_r4 is not None:
        results["handheld_onnx_without_r4"]["perplexity"] = None  # timing only: its logits are wrong
        shutil.rmtree(no_r4, ignore_errors=True)
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
                m: results["handheld_onnx"]["by_threads"][str(t)][m]
                / results["genai_builder_int4"]["by_threads"][str(t)][m]
                for m in ("prefill_tok_s", "decode_tok_s")
            }
            for t in threads
        },
    }
    if no_r4 is not None:
        by = lambda name, t, m: results[name]["by_threads"][str(t)][m]
        report["online_hadamard_r4_cost"] = {
            str(t): {
                # step time with R4 minus without, over step time with it
                "decode_share_of_step": 1
                - by("handheld_onnx", t, "decode_tok_s") / by("handheld_onnx_without_r4", t, "decode_tok_s"),
                "decode_ratio_without_r4_vs_genai": by("handheld_onnx_without_r4", t, "decode_tok_s")
                / by("genai_builder_int4", t, "decode_tok_s"),
            }
            for t in threads
        }
    print_table(report)
    return report


def print_table(report: dict) -> None:
    print(
        f"\nONNX vs onnxruntime-genai builder: {report['prompt_tokens']}-token prompt, {report['decode_steps']} decode steps, median of runs"
    )
    print(
        f"{'artifact':26} {'thr':>3} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak RSS MB':>12} {'size MB':>8} {'wiki PPL':>9}"
    )
    for name, r in report["results"].items():
        ppl = f"{r['perplexity']:9.2f}" if r.get("perplexity") is not None else f"{'-':>9}"
        for t, m in r["by_threads"].items():
            print(
                f"{name:26} {t:>3} {m['prefill_tok_s']:14.1f} {m['decode_tok_s']:13.1f} {m['peak_rss_mb']:12.0f} {r['size_mb']:8.1f} {ppl}"
            )
    for t, ratio in report["ratios_vs_genai_builder"].items():
        print(
            f"handheld / genai builder @ {t} thread(s): prefill {ratio['prefill_tok_s']:.2f}x, decode {ratio['decode_tok_s']:.2f}x"
        )
    for t, cost in report.get("online_hadamard_r4_cost", {}).items():
        print(
            f"online Hadamard R4 @ {t} thread(s): {100 * cost['decode_share_of_step']:.1f}% of a decode step; "
            f"the same graph without it (timing only) decodes at {cost['decode_ratio_without_r4_vs_genai']:.2f}x the builder"
        )
