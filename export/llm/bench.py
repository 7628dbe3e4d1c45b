"""`handheld bench DIR` for LLM artifacts: prefill/decode tok/s, time to first token, peak RSS, size.

Each (artifact, thread count) runs in its own worker process, so peak RSS belongs to that
artifact alone and OMP_NUM_THREADS=1 is set before torch loads. A worker prefills a
PROMPT_TOKENS-token prompt at position 0, then runs DECODE_STEPS single-token decode calls
(greedy, stop tokens ignored), once to warm up and PASSES times measured (median). `runs`
rounds interleave every artifact and thread count, one worker each per round, so a load that
drifts on a shared machine hits them all alike; the report gives the median over rounds and
the spread (min, max). Each pass then times LATE_STEPS more decode calls at the end of the
context (positions max_seq_len - LATE_STEPS - 1 ..), where attention reads the whole cache:
the decode speed a long chat ends at (`late_decode_tok_s`). A `--baseline` .pte (ExecuTorch's own export_llm output, same
forward(tokens, input_pos) signature) or another Handheld artifact folder (e.g. the unrotated
export, to price the rotations) goes through the identical worker in the same run.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from export.worker import peak_rss_mb

PROMPT_TOKENS, DECODE_STEPS = 64, 128
LATE_STEPS = 32  # decode calls timed at the end of the context
PASSES = 2  # measured passes per worker (after one warm-up)


def _worker(
    target: str,
    threads: int,
    runs: int,
    prompt_tokens: int = PROMPT_TOKENS,
    decode_steps: int = DECODE_STEPS,
    late_pos: int = 0,
) -> dict:
    import torch

    from runtime.executorch_runner import set_threads

    path = Path(target)
    if path.is_dir():
        from runtime.generate import LLMStepper
        from runtime.runner import open_runner

        step = LLMStepper(open_runner(path, threads=threads))
    else:  # a bare .pte with forward(tokens[1, S], input_pos[1]) -> logits
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        import executorch.kernels.quantized  # noqa: F401
        from executorch.runtime import Runtime

        set_threads(threads)
        method = Runtime.get().load_program(str(path)).load_method("forward")

        from runtime.executorch_runner import native_stderr_silenced

        def step(tokens, pos):
            t = torch.as_tensor(tokens, dtype=torch.long).reshape(1, -1)
            with native_stderr_silenced():  # the same per-call cost as Handheld's runner
                return method.execute([t, torch.tensor([pos], dtype=torch.long)])[0].reshape(-1)

    return time_generation(step, threads, runs, prompt_tokens, decode_steps, late_pos)


def time_generation(
    step,
    threads: int,
    runs: int,
    prompt_tokens: int = PROMPT_TOKENS,
    decode_steps: int = DECODE_STEPS,
    late_pos: int = 0,
) -> dict:
    """One warm-up then `runs` measured (prefill, greedy decode) passes through `step(tokens, pos)`;
    medians. With `late_pos`, each pass also times LATE_STEPS decode calls from that position
    (the cache before it holds whatever earlier passes wrote: attention reads all of it alike).
    Shared by every LLM worker so all artifacts are timed identically."""
    import torch

    prompt = torch.arange(100, 100 + prompt_tokens)  # fixed ids; speed does not depend on content
    samples = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        logits = step(prompt, 0)
        t1 = time.perf_counter()
        token = int(logits.argmax())
        for pos in range(prompt_tokens, prompt_tokens + decode_steps):
            token = int(step([token], pos).argmax())
        t2 = time.perf_counter()
        for pos in range(late_pos, late_pos + LATE_STEPS if late_pos else late_pos):
            token = int(step([token], pos).argmax())
        t3 = time.perf_counter()
        if i:  # the first run warms up caches and weight packing
            samples.append((t1 - t0, t2 - t1, t3 - t2))
    prefill = statistics.median(s[0] for s in samples)
    decode = statistics.median(s[1] for s in samples)
    late = {"late_decode_tok_s": LATE_STEPS / statistics.median(s[2] for s in samples)} if late_pos else {}
    return {
        "threads": threads,
        "prefill_tok_s": prompt_tokens / prefill,
        "decode_tok_s": decode_steps / decode,
        **late,
        "time_to_first_token_ms": prefill * 1000,
        "peak_rss_mb": peak_rss_mb(),
        "runs": runs,
    }


def _measure(target: Path, threads: int, runs: int, prompt_tokens: int, decode_steps: int, late_pos: int = 0) -> dict:
    from export.worker import run_worker

    args = (Path(target), threads, runs, prompt_tokens, decode_steps, late_pos)
    return run_worker(
        "export.llm.bench:_worker", *args, what=str(target), fix="run `handheld parity` on the artifact first"
    )


def median_runs(runs: list[dict]) -> dict:
    """Per-metric median over rounds, with the spread (min, max) of the speeds; peak RSS: the max."""
    speeds = [k for k, v in runs[0].items() if isinstance(v, float) and k != "peak_rss_mb"]
    merged = {k: statistics.median(r[k] for r in runs) for k in speeds}
    merged.update(threads=runs[0]["threads"], runs=len(runs), peak_rss_mb=max(r["peak_rss_mb"] for r in runs))
    merged["spread"] = {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in speeds}
    return merged


def _size_mb(target: Path) -> float:
    files = [p for p in target.rglob("*") if p.is_file()] if target.is_dir() else [target]
    return sum(p.stat().st_size for p in files) / 2**20


def bench_artifact(
    folder: Path,
    baseline: Path | None = None,
    threads=(1, 2),
    runs: int = 3,
    prompt_tokens: int = PROMPT_TOKENS,
    decode_steps: int = DECODE_STEPS,
) -> dict:
    from export.progress import tqdm
    from runtime.manifest import load_manifest

    folder = Path(folder)
    manifest = load_manifest(folder)
    if prompt_tokens + decode_steps > manifest["max_seq_len"]:
        from runtime.errors import HandheldError

        raise HandheldError(
            f"the bench needs {prompt_tokens + decode_steps} positions but {folder} has a context of {manifest['max_seq_len']}",
            "re-export with a larger --max-seq-len",
        )
    # decode at the end of the shorter context: a .pte baseline is taken to be built with the
    # same --max-seq-len (make baseline / baseline-llm), a Handheld folder says its own
    context = manifest["max_seq_len"]
    if baseline and Path(baseline).is_dir():
        context = min(context, load_manifest(Path(baseline))["max_seq_len"])
    late_pos = context - LATE_STEPS - 1 if context > prompt_tokens + decode_steps + LATE_STEPS else 0
    targets = {"handheld": folder}
    # a bare .pte baseline is ExecuTorch's export_llm; a folder is another Handheld artifact
    # (e.g. the unrotated export, to price the rotations in the same run)
    base_name = None
    if baseline:
        baseline = Path(baseline)
        base_name = f"handheld:{baseline.name}" if baseline.is_dir() else "executorch_export_llm"
        targets[base_name] = baseline
    results: dict = {name: {"size_mb": _size_mb(t), "path": str(t), "by_threads": {}} for name, t in targets.items()}
    rounds: dict = {(name, t): [] for name in targets for t in threads}
    jobs = [(name, t) for _ in range(runs) for name in targets for t in threads]  # interleaved rounds
    for name, t in tqdm(jobs, desc="bench (interleaved rounds)", unit="run"):
        rounds[(name, t)].append(_measure(targets[name], t, PASSES, prompt_tokens, decode_steps, late_pos))
    for (name, t), items in rounds.items():
        results[name]["by_threads"][str(t)] = median_runs(items)
    report = {
        "kind": "llm",
        "artifact": str(folder),
        "backend": manifest["backend"],
        "quantization": manifest.get("quantization", {}).get("scheme"),
        "prompt_tokens": prompt_tokens,
        "decode_steps": decode_steps,
        "rounds": runs,
        "passes_per_round": PASSES,
        "late_decode": {"from_position": late_pos, "steps": LATE_STEPS, "max_seq_len": context} if late_pos else None,
        "results": results,
    }
    if baseline:
        report[f"ratios_vs_{base_name}"] = {
            str(t): {
                metric: results["handheld"]["by_threads"][str(t)][metric]
                / results[base_name]["by_threads"][str(t)][metric]
                for metric in ("prefill_tok_s", "decode_tok_s", "late_decode_tok_s")
                if metric in results[base_name]["by_threads"][str(t)]
            }
            for t in threads
        }
    print_table(report)
    return report


def print_table(report: dict) -> None:
    late = report.get("late_decode")
    print(
        f"\nLLM bench: {report['prompt_tokens']}-token prompt, {report['decode_steps']} decode steps, "
        f"median of {report['rounds']} interleaved round(s) x {report['passes_per_round']} passes"
    )
    if late:
        print(f"late decode: {late['steps']} steps from position {late['from_position']} of {late['max_seq_len']}")
    print(
        f"{'artifact':24} {'thr':>3} {'prefill tok/s':>14} {'decode tok/s':>13} {'late tok/s':>11} {'TTFT ms':>8} {'peak RSS MB':>12} {'size MB':>8}"
    )
    for name, r in report["results"].items():
        for t, m in r["by_threads"].items():
            late_speed = f"{m['late_decode_tok_s']:11.1f}" if "late_decode_tok_s" in m else f"{'-':>11}"
            print(
                f"{name:24} {t:>3} {m['prefill_tok_s']:14.1f} {m['decode_tok_s']:13.1f} {late_speed} {m['time_to_first_token_ms']:8.1f} {m['peak_rss_mb']:12.0f} {r['size_mb']:8.1f}"
            )
    for key, by_threads in report.items():
        if key.startswith("ratios_vs_"):
            for t, ratio in by_threads.items():
                late_ratio = f", late decode {ratio['late_decode_tok_s']:.2f}x" if "late_decode_tok_s" in ratio else ""
                print(
                    f"handheld / {key.removeprefix('ratios_vs_')} @ {t} thread(s): prefill {ratio['prefill_tok_s']:.2f}x, decode {ratio['decode_tok_s']:.2f}x{late_ratio}"
                )
