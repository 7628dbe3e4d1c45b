"""A conversation three times the context through an LLM artifact: does it stay fluent, and
what does keeping it inside the context cost?

The held-out `evaluation` text (3 x max_seq_len tokens) goes through the artifact as chat turns
(64 tokens prefilled, 64 fed one by one) under several context windows (runtime/context.py).
Scored: perplexity of the last third's one-by-one tokens, against the same tokens in a fresh
context that never saw the conversation (ratio < 1: the window keeps history that helps);
evictions, recomputed tokens and the share of the run's time they took.

    python -m export.llm.context_eval ARTIFACT OUT.json
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

TURN = 64


def tail_perplexity(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return math.exp(float(torch.nn.functional.cross_entropy(logits.double(), targets)))


def measure(folder: Path, threads: int = 2) -> dict:
    from transformers import PreTrainedTokenizerFast

    from export.data.text import token_windows
    from export.llm.parity import streamed_conversation
    from runtime.context import ContextWindow
    from runtime.generate import LLMStepper
    from runtime.manifest import load_manifest
    from runtime.runner import open_runner

    manifest = load_manifest(folder)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(Path(folder) / manifest["tokenizer"]["file"]))
    step = LLMStepper(open_runner(folder, threads=threads))
    n = step.max_seq_len
    tokens = token_windows(tokenizer, "evaluation", 3 * n, 1)[0]
    t0 = time.perf_counter()
    logits, targets, _ = streamed_conversation(step, tokens[2 * n :], None, TURN)
    fresh = {"tail_perplexity": tail_perplexity(logits, targets), "seconds": time.perf_counter() - t0}
    report = {"artifact": str(folder), "max_seq_len": n, "tokens": 3 * n, "turn": TURN, "fresh_context": fresh}
    windows = {
        "artifact's own": ContextWindow.from_manifest(manifest),
        "no sink": ContextWindow(n, 0, n // 2),
        "quarter window": ContextWindow(n, 4, n // 4),
    }
    for name, window in windows.items():
        t0 = time.perf_counter()
        logits, scored, conv = streamed_conversation(step, tokens, window, TURN, score_from=2 * n)
        assert torch.equal(scored, targets)
        seconds = time.perf_counter() - t0
        ppl = tail_perplexity(logits, targets)
        report[name] = {
            "window": window.to_manifest(),
            "tail_perplexity": ppl,
            "tail_perplexity_vs_fresh": ppl / fresh["tail_perplexity"],
            "scored_tokens": len(targets),
            "evictions": conv.evictions,
            "recomputed_tokens": conv.recomputed_tokens,
            "recompute_s": conv.recompute_s,
            "seconds": seconds,
            "recompute_share": conv.recompute_s / seconds,
        }
        print(
            f"{name}: tail perplexity {ppl:.2f} ({ppl / fresh['tail_perplexity']:.2f}x a fresh context's "
            f"{fresh['tail_perplexity']:.2f}), {conv.evictions} evictions, {conv.recomputed_tokens} tokens "
            f"prefilled again in {conv.recompute_s:.1f} s ({conv.recompute_s / seconds:.0%} of the run)"
        )
    return report


if __name__ == "__main__":
    result = measure(Path(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps(result, indent=1) + "\n")
