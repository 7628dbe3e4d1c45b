"""Text generation on an LLM artifact alone: one prefill call, then one call per token.

The artifact's `forward(tokens[1, S], input_pos[1]) -> logits[1, vocab]` owns the KV cache;
this loop samples and stops on the checkpoint's stop tokens, and a runtime.context.Conversation
tracks the position (and, given a context window, keeps going past the context).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from runtime.errors import HandheldError


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise HandheldError(
                f"invalid sampling settings {self}", "use temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 1"
            )


@dataclass
class GenerationResult:
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    prefill_s: float = 0.0  # time to first token
    decode_s: float = 0.0
    stopped_by: str = "length"
    decode_calls: int = 0
    evictions: int = 0  # times the context filled and its sink + window were prefilled again
    recompute_s: float = 0.0  # time spent on those prefills (inside decode_s)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tok_s(self) -> float:
        return self.decode_calls / (self.decode_s - self.recompute_s) if self.decode_calls else 0.0


def sample(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator) -> int:
    """logits: [vocab] -> token id (greedy, or temperature + nucleus sampling)."""
    if cfg.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.double() / cfg.temperature, dim=-1)
    if cfg.top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < cfg.top_p  # smallest set with mass >= top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))


class LLMStepper:
    """Calls an LLM runner at explicit positions; shared by generation, parity and benchmarks."""

    def __init__(self, runner):
        self.runner = runner
        self.max_seq_len = int(runner.manifest["max_seq_len"])

    def __call__(self, tokens: list[int] | torch.Tensor, pos: int) -> torch.Tensor:
        t = torch.as_tensor(tokens, dtype=torch.long).reshape(1, -1)
        return self.runner.run({"tokens": t, "input_pos": torch.tensor([pos], dtype=torch.long)})["logits"].reshape(-1)


def generate(
    step: LLMStepper,
    prompt_ids: list[int],
    cfg: SamplingConfig = SamplingConfig(),
    stop_ids: tuple[int, ...] = (),
    on_token: Callable[[int], None] | None = None,
    conversation=None,
) -> GenerationResult:
    """Answer `prompt_ids`, fed after what `conversation` (runtime.context.Conversation) already
    holds. Without one the answer starts a fresh cache and ends where the context does; with a
    context window it goes on for max_new_tokens."""
    from runtime.context import Conversation

    conv = conversation or Conversation(step)
    n = len(prompt_ids)
    if n == 0:
        raise HandheldError("the prompt is empty", "pass a non-empty --prompt")
    if conv.window is None and conv.position + n >= step.max_seq_len:
        raise HandheldError(
            f"the prompt has {n} tokens but the artifact's context is {step.max_seq_len}"
            + (f" ({conv.position} already used)" if conv.position else ""),
            "shorten the prompt or re-export with a larger --max-seq-len",
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    budget = cfg.max_new_tokens if conv.window else min(cfg.max_new_tokens, step.max_seq_len - conv.position - n)
    result = GenerationResult(prompt_tokens=n)
    evictions = conv.evictions
    t0 = time.perf_counter()
    logits = conv.feed(prompt_ids)
    result.prefill_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    recompute_before_decode = conv.recompute_s
    while True:
        token = sample(logits, cfg, gen)
        if token in stop_ids:
            result.stopped_by = "stop token"
            break
        result.tokens.append(token)
        if on_token:
            on_token(token)
        if len(result.tokens) >= budget:
            break
        logits = conv.feed([token])
        result.decode_calls += 1
    result.decode_s = time.perf_counter() - t1
    result.evictions = conv.evictions - evictions
    result.recompute_s = conv.recompute_s - recompute_before_decode  # prefill's own is in prefill_s
    return result
