"""`handheld bench DIR` for LongVU artifacts, per sample video and XNNPACK thread count:

- frames/s through each encoder (DINO sees every sampled frame, SigLIP + projector only the
  frames that survive temporal dedup);
- tokens before and after each compression stage;
- time to first token (the multimodal prefill) and video-to-first-token (decode + encoders +
  selection + prefill), decode tok/s;
- peak RSS of a worker process that holds only the artifact, and the artifact's size.

Each thread count runs in its own worker process with OMP_NUM_THREADS=1 set before torch loads;
each video is answered once to warm up and `runs` times measured (medians reported).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from export.worker import peak_rss_mb

QUESTION = "What is happening in this video?"
NEW_TOKENS = 16


def _worker(folder: str, threads: int, runs: int) -> dict:

    from export.longvu.parity import sample_videos
    from runtime.generate import SamplingConfig
    from runtime.video import decode
    from runtime.video_qa import ask, open_pieces

    pieces, tokenizer, _ = open_pieces(Path(folder), threads=threads)
    sampling = SamplingConfig(max_new_tokens=NEW_TOKENS)
    videos = {}
    for name, path in sample_videos().items():
        t0 = time.perf_counter()
        video = decode(path, pieces.cfg.video)
        decode_s = time.perf_counter() - t0
        answers = [ask(pieces, tokenizer, video, QUESTION, sampling) for _ in range(runs + 1)][1:]
        med = lambda key, answers=answers: statistics.median(a.timings[key] for a in answers)
        c = answers[0].selection.counts
        gen = [a.generation for a in answers]
        encode_s = med("dino_s") + med("siglip_s") + med("project_s")
        videos[name] = {
            "counts": c,
            "dino_frames_per_s": c["frames_sampled"] / med("dino_s"),
            "siglip_frames_per_s": c["frames_after_dedup"] / med("siglip_s"),
            "project_frames_per_s": c["frames_after_dedup"] / med("project_s"),
            "select_ms": med("select_s") * 1000,
            "prompt_tokens": answers[0].prompt_tokens,
            "time_to_first_token_ms": med("time_to_first_token_s") * 1000,
            "video_to_first_token_ms": (decode_s + encode_s + med("select_s") + med("time_to_first_token_s")) * 1000,
            # None: the answer was EOS at once (no decode step to time)
            "decode_tok_s": statistics.median(g.decode_tok_s for g in gen)
            if all(g.decode_calls for g in gen)
            else None,
        }
    return {
        "threads": threads,
        "videos": videos,
        "peak_rss_mb": peak_rss_mb(),
        "runs": runs,
    }


def _measure(folder: Path, threads: int, runs: int) -> dict:
    from export.worker import run_worker

    return run_worker(
        "export.longvu.bench:_worker",
        Path(folder),
        threads,
        runs,
        what=f"LongVU {folder}",
        fix="run `handheld parity` on the artifact first",
    )


def bench_artifact(folder: Path, baseline: Path | None = None, threads=(1, 2), runs: int = 3) -> dict:
    """`baseline` is accepted for the CLI's signature; LongVU has no external baseline artifact."""
    from runtime.manifest import load_manifest

    folder = Path(folder)
    manifest = load_manifest(folder)
    size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    report = {
        "kind": "longvu",
        "artifact": str(folder),
        "backend": manifest["backend"],
        "size_mb": size_mb,
        "question": QUESTION,
        "new_tokens": NEW_TOKENS,
        "by_threads": {str(t): _measure(folder, t, runs) for t in threads},
    }
    from runtime.coreml_runner import coreml_runtime_available

    if manifest["backend"] == "coreml" and not coreml_runtime_available():
        report["engine"] = (
            "mil-interpreter: the packages' MIL programs in fp32 on this host's CPU, not Apple's runtime; not device speeds"
        )
    print_table(report)
    return report


def print_table(report: dict) -> None:
    print(
        f"\nLongVU bench ({report['backend']}, {report['size_mb']:.0f} MB): median of runs, {report['new_tokens']} new tokens"
    )
    if "engine" in report:
        print(f"engine: {report['engine']}")
    head = f"{'video':13} {'thr':>3} {'frames':>9} {'tokens per stage':>28} {'DINO f/s':>9} {'SigLIP f/s':>10} {'TTFT ms':>8} {'video->1st ms':>13} {'dec tok/s':>9} {'RSS MB':>7}"
    print(head)
    for t, r in report["by_threads"].items():
        for name, v in r["videos"].items():
            c = v["counts"]
            stages = f"{c['tokens_sampled']}>{c['tokens_after_dedup']}>{c['tokens_after_query']}>{c['tokens_after_stc']}>{c['tokens_after_truncation']}"
            decode = f"{v['decode_tok_s']:9.1f}" if v["decode_tok_s"] is not None else f"{'-':>9}"  # '-': EOS first
            print(
                f"{name:13} {t:>3} {c['frames_sampled']:>4}>{c['frames_after_dedup']:<4} {stages:>28} {v['dino_frames_per_s']:9.1f} "
                f"{v['siglip_frames_per_s']:10.1f} {v['time_to_first_token_ms']:8.0f} {v['video_to_first_token_ms']:13.0f} "
                f"{decode} {r['peak_rss_mb']:7.0f}"
            )
