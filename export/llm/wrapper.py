"""The LLM export wrapper: a static KV cache and one `forward(tokens, input_pos) -> logits`.

    tokens:    [1, S] int64, S in 1..max_seq_len-1 (prefill: S prompt tokens; decode: S = 1)
    input_pos: [1] int64, position of tokens[0, 0] in the cache
    logits:    [1, vocab] fp32, for the last position only (what generation needs)

The cache lives in mutable buffers [1, max_seq_len, n_kv_heads, head_dim] written at
input_pos by ExecuTorch's `llama::update_cache`; attention is `llama::custom_sdpa`, which
reads only positions < input_pos + S, so stale entries past the current context never
leak in and a new conversation just starts again at input_pos 0. Both ops have eager CPU
kernels, so the unlowered wrapper is the exact reference for the lowered program.
"""

from __future__ import annotations

import copy

import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers llama:: ops)
import torch
from torch import nn

from export.llm.model import Llama

INPUT_NAMES = ("tokens", "input_pos")
OUTPUT_NAMES = ("logits",)


class StaticKVCacheSDPA(nn.Module):
    """Attention over a static cache; slots into `Attention.sdpa`."""

    def __init__(self, n_kv_heads: int, head_dim: int, max_seq_len: int):
        super().__init__()
        shape = (1, max_seq_len, n_kv_heads, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def forward(self, q, k, v, start_pos):  # q: [1, S, H, D]; k, v: [1, S, Hkv, D]
        torch.ops.llama.update_cache(k, self.k_cache, start_pos)
        torch.ops.llama.update_cache(v, self.v_cache, start_pos)
        return torch.ops.llama.custom_sdpa(q, self.k_cache, self.v_cache, start_pos, None, 0.0, True)


class CachedDecoder(nn.Module):
    def __init__(self, model: Llama, max_seq_len: int):
        super().__init__()
        model = copy.deepcopy(model)
        args = model.args
        self.max_seq_len = max_seq_len
        for layer in model.layers:
            layer.self_attn.sdpa = StaticKVCacheSDPA(args.n_kv_heads, args.head_dim, max_seq_len)
        # RoPE tables only as long as the cache: [max_seq_len, head_dim]
        model.rope_cos = model.rope_cos[:max_seq_len].clone()
        model.rope_sin = model.rope_sin[:max_seq_len].clone()
        self.model = model

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start + tokens.shape[1] <= self.max_seq_len)
        h = self.model.hidden(tokens, start)  # [1, S, dim]
        return self.model.lm_head(h[:, -1, :])  # [1, vocab]

    def example_inputs(self, seq_len: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, seq_len, dtype=torch.long), torch.zeros(1, dtype=torch.long)

    def dynamic_shapes(self):
        seq = torch.export.Dim("seq", min=1, max=self.max_seq_len - 1)
        return {"tokens": {1: seq}, "input_pos": None}

    def runtime_metadata(self, bos_id: int | None, eos_ids: tuple[int, ...]) -> dict:
        """Constant methods ExecuTorch's LLM runners read from the program."""
        meta = {
            "get_max_seq_len": self.max_seq_len,
            "get_max_context_len": self.max_seq_len,
            "get_vocab_size": self.model.args.vocab_size,
            "get_n_layers": self.model.args.n_layers,
            "use_kv_cache": True,
            "use_sdpa_with_kv_cache": True,
            "enable_dynamic_shape": True,
            "get_eos_ids": list(eos_ids),
        }
        if bos_id is not None:
            meta["get_bos_id"] = bos_id
        return meta
