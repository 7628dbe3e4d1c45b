"""The CoreML export wrapper: a stateful KV cache (ct.StateType) and shape-only positions.

    tokens:      [1, S] int32, S >= 1 new tokens
    causal_mask: [1, 1, S, T] fp32 additive mask (0 = attend, -inf = not), T = input_pos + S
    ->
    logits:      [1, vocab] fp32, for the last position only
    states:      key_cache, value_cache [n_layers, n_kv_heads, max_seq_len, head_dim] fp32

CoreML has no data-dependent indexing into a state, so the write position comes from shapes
alone (input_pos = T - S, the pattern of Apple's stateful-Llama guide): the cache rows
input_pos..T-1 are overwritten, attention reads rows 0..T-1 under the mask, stale rows past T
never leak in. The runner (runtime/coreml_runner.py) builds the mask from input_pos, so the
Runner contract is the same as the other backends'. Attention uses plain ops (matmul,
softmax) with the kv heads repeated for GQA.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from export.llm.model import Llama
from runtime.coreml_runner import causal_mask

INPUT_NAMES = ("tokens", "causal_mask")


class StateKVSDPA(nn.Module):
    """Attention over layer `index` of the wrapper's shared cache; slots into `Attention.sdpa`."""

    def __init__(self, owner: StatefulDecoder, index: int):
        super().__init__()
        self.index = index
        self._owner = [owner]  # a list, so the owner is not registered as a submodule (no cycle)

    def forward(self, q, k, v, start_pos):  # q: [1, S, H, D]; k, v: [1, S, Hkv, D]
        owner = self._owner[0]
        mask = owner.mask  # [1, 1, S, T]
        s, t = q.shape[1], mask.shape[-1]
        owner.key_cache[self.index, :, t - s : t, :] = k[0].transpose(0, 1)  # [Hkv, S, D]
        owner.value_cache[self.index, :, t - s : t, :] = v[0].transpose(0, 1)
        keys = owner.key_cache[self.index, :, :t, :]  # [Hkv, T, D]
        values = owner.value_cache[self.index, :, :t, :]
        rep = q.shape[2] // keys.shape[0]
        if rep > 1:  # GQA: each kv head serves `rep` query heads
            keys, values = keys.repeat_interleave(rep, dim=0), values.repeat_interleave(rep, dim=0)
        qh = q[0].transpose(0, 1)  # [H, S, D]
        scores = torch.matmul(qh, keys.transpose(1, 2)) * (1.0 / math.sqrt(q.shape[-1]))  # [H, S, T]
        out = torch.matmul(torch.softmax(scores + mask[0], dim=-1), values)  # [H, S, D]
        return out.transpose(0, 1)[None]  # [1, S, H, D]


class StatefulDecoder(nn.Module):
    def __init__(self, model: Llama, max_seq_len: int):
        super().__init__()
        model = copy.deepcopy(model)
        a = model.args
        self.max_seq_len = max_seq_len
        shape = (a.n_layers, a.n_kv_heads, max_seq_len, a.head_dim)
        self.register_buffer("key_cache", torch.zeros(shape))
        self.register_buffer("value_cache", torch.zeros(shape))
        for i, layer in enumerate(model.layers):
            layer.self_attn.sdpa = StateKVSDPA(self, i)
        model.rope_cos = model.rope_cos[:max_seq_len].clone()  # [max_seq_len, head_dim]
        model.rope_sin = model.rope_sin[:max_seq_len].clone()
        self.model = model
        self.mask: torch.Tensor | None = None

    def forward(self, tokens: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        return self.logits_last(tokens.long(), causal_mask, self.model.hidden)

    def logits_last(self, first: torch.Tensor, causal_mask: torch.Tensor, hidden) -> torch.Tensor:
        """hidden(first [1, S, ...], input_pos) -> [1, S, dim]; logits [1, vocab] of the last position."""
        s, t = first.shape[1], causal_mask.shape[-1]
        torch._check(t < self.max_seq_len)
        torch._check(s <= t)
        self.mask = causal_mask
        h = hidden(first, t - s)  # [1, S, dim]
        self.mask = None
        return self.model.lm_head(h[:, -1:, :])[:, 0]  # [1, vocab]

    def example_inputs(self, seq_len: int = 3, input_pos: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, seq_len, dtype=torch.int32), causal_mask(input_pos, seq_len)

    def dynamic_shapes(self):
        # T stays below max_seq_len: a full-length slice of the cache would specialise the graph
        seq = torch.export.Dim("seq", min=1, max=self.max_seq_len - 1)
        total = torch.export.Dim("total", min=1, max=self.max_seq_len - 1)
        return {"tokens": {1: seq}, "causal_mask": {2: seq, 3: total}}
