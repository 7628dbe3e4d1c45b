"""Conversations longer than the context: an attention sink and a sliding window, recomputed.

An LLM artifact's KV cache holds `max_seq_len` positions. When the tokens of a conversation
would pass that, `Conversation` keeps the first `sink_tokens` of them (the attention sink:
StreamingLLM, arXiv 2309.17453, finds that a model parks attention on the first tokens and
breaks when they leave the cache) and the last `window_tokens`, drops the tokens between, and
prefills the kept ones again at positions 0 .. sink + window - 1. Generation then goes on.

Re-prefilling is the recomputation variant of the sliding window: every kept token gets the
position and the keys/values a fresh context would give it, so the artifact needs nothing new
in its graph and every backend (ExecuTorch, ONNX, CoreML) runs it through the same
`forward(tokens, input_pos)`. Its price is one prefill of sink + window tokens each time the
cache fills, every `max_seq_len - sink - window` tokens. ExecuTorch's export_llm instead keeps
the cache and re-rotates the kept keys to their new positions in the graph (no pause, a graph
variant per backend); there the kept keys and values still carry what the evicted tokens told
them, here they do not.

The artifact's manifest says which window to use (`context`, written at export; the apps read
the same keys); older artifacts get `ContextWindow.default(max_seq_len)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from runtime.errors import HandheldError

SINK_TOKENS = 4  # StreamingLLM's choice; SmolLM2's chat template opens with 4 fixed tokens


@dataclass(frozen=True)
class ContextWindow:
    max_seq_len: int
    sink_tokens: int = SINK_TOKENS
    window_tokens: int = 0  # 0: half the context

    def __post_init__(self):
        if self.window_tokens == 0:
            object.__setattr__(self, "window_tokens", self.max_seq_len // 2)
        if self.sink_tokens < 0 or self.window_tokens < 1:
            raise HandheldError(
                f"a context window needs sink tokens >= 0 and window tokens >= 1 (got {self.sink_tokens}, "
                f"{self.window_tokens})",
                f"pass e.g. --sink-tokens {SINK_TOKENS} --window-tokens {self.max_seq_len // 2}",
            )
        if self.sink_tokens + self.window_tokens > self.max_seq_len - 2:
            raise HandheldError(
                f"sink + window tokens ({self.sink_tokens} + {self.window_tokens}) leave no room in the "
                f"artifact's context of {self.max_seq_len}",
                f"keep sink + window at most {self.max_seq_len - 2} (e.g. --window-tokens {self.max_seq_len // 2})",
            )

    @property
    def kept(self) -> int:
        return self.sink_tokens + self.window_tokens

    def keep(self, tokens: list[int]) -> list[int]:
        """The tokens that stay when `tokens` no longer fit: the sink and the most recent window."""
        return tokens[: self.sink_tokens] + tokens[-self.window_tokens :]

    def to_manifest(self) -> dict:
        return {"sink_tokens": self.sink_tokens, "window_tokens": self.window_tokens, "on_overflow": "recompute"}

    @classmethod
    def from_manifest(cls, manifest: dict, sink_tokens: int | None = None, window_tokens: int | None = None):
        """The artifact's own window, with the caller's overrides (None: keep the artifact's)."""
        own = manifest.get("context") or {}
        return cls(
            int(manifest["max_seq_len"]),
            own.get("sink_tokens", SINK_TOKENS) if sink_tokens is None else sink_tokens,
            own.get("window_tokens", 0) if window_tokens is None else window_tokens,
        )


def max_prefill(manifest: dict) -> int:
    """The longest token chunk one forward call accepts (the `seq` range the exporter wrote)."""
    for spec in manifest.get("inputs", ()):
        if spec.get("name") == "tokens" and "seq" in spec.get("dynamic", {}):
            return int(spec["dynamic"]["seq"][1])
    return int(manifest["max_seq_len"]) - 1


class Conversation:
    """The tokens in an artifact's KV cache (positions 0 .. len - 1), kept inside the context.

    `step` is a runtime.generate.LLMStepper (or anything with the same call and `runner.manifest`).
    `feed(tokens)` runs them and returns the logits after the last one; when they would not fit,
    the window's sink and recent tokens are prefilled again first.
    """

    def __init__(self, step, window: ContextWindow | None = None):
        self.step = step
        self.window = window
        self.max_seq_len = step.max_seq_len
        manifest = getattr(getattr(step, "runner", None), "manifest", None) or {"max_seq_len": self.max_seq_len}
        self.chunk = max_prefill(manifest)
        self.cached: list[int] = []
        self.evictions = 0
        self.recomputed_tokens = 0
        self.recompute_s = 0.0

    @property
    def position(self) -> int:
        return len(self.cached)

    def room(self) -> int:
        return self.max_seq_len - len(self.cached)

    def feed(self, tokens: list[int]) -> torch.Tensor:
        tokens = list(tokens)
        if not tokens:
            raise HandheldError("nothing to feed the model", "pass at least one token")
        if len(self.cached) + len(tokens) > self.max_seq_len:
            if self.window is None:
                raise HandheldError(
                    f"the conversation needs {len(self.cached) + len(tokens)} positions, the artifact's context "
                    f"holds {self.max_seq_len}",
                    "shorten it, re-export with a larger --max-seq-len, or keep a context window",
                )
            return self._recompute(self.window.keep(self.cached + tokens))
        return self._run(tokens)

    def _run(self, tokens: list[int]) -> torch.Tensor:
        logits = None
        for i in range(0, len(tokens), self.chunk):
            piece = tokens[i : i + self.chunk]
            logits = self.step(piece, len(self.cached))
            self.cached += piece
        return logits

    def _recompute(self, kept: list[int]) -> torch.Tensor:
        t0 = time.perf_counter()
        self.cached = []  # stale cache rows past the new positions are masked by input_pos
        logits = self._run(kept)
        self.evictions += 1
        self.recomputed_tokens += len(kept)
        self.recompute_s += time.perf_counter() - t0
        return logits
