"""The text-decoder pieces of LongVU: token embedding and an embeddings-in decoder.

LongVU feeds the LLM a sequence that is part text embeddings, part projected video tokens, so
the decoder takes embeddings instead of token ids:

    embed:  tokens [1, L] int64 -> embeds [1, L, dim]
    decode: embeds [1, S, dim] fp32, input_pos [1] int64 -> logits [1, vocab] (last position)

Both are built on the LLM export path's `CachedDecoder` (static KV cache with ExecuTorch's
`llama::update_cache` / `llama::custom_sdpa`) and `prepare_model` (rotations, then 8da4w), so
the decoder here is exactly the one `handheld export llm` produces, minus its token lookup.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from export.llm.model import Llama
from export.llm.wrapper import CachedDecoder


class EmbedsDecoder(nn.Module):
    def __init__(self, cached: CachedDecoder):
        super().__init__()
        self.max_seq_len = cached.max_seq_len
        self.model = cached.model
        # the table lives in the `embed` method; keep it out of this method's constants
        self.model.embed_tokens = nn.Identity()

    def forward(self, embeds: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start + embeds.shape[1] <= self.max_seq_len)
        h = self.model.hidden_from_embeds(embeds, start)  # [1, S, dim]
        return self.model.lm_head(h[:, -1, :])  # [1, vocab]

    def example_inputs(self, seq_len: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        dim = self.model.args.dim
        return torch.zeros(1, seq_len, dim), torch.zeros(1, dtype=torch.long)

    def dynamic_shapes(self):
        seq = torch.export.Dim("seq", min=1, max=self.max_seq_len - 1)
        return {"embeds": {1: seq}, "input_pos": None}


class TokenEmbedding(nn.Module):
    """tokens [1, L] -> [1, L, dim] through the (possibly int8) embedding table."""

    def __init__(self, table: nn.Module, max_len: int):
        super().__init__()
        self.table = table
        self.max_len = max_len

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table(tokens)

    def example_inputs(self, seq_len: int = 2) -> tuple[torch.Tensor]:
        return (torch.zeros(1, seq_len, dtype=torch.long),)

    def dynamic_shapes(self):
        return {"tokens": {1: torch.export.Dim("len", min=1, max=self.max_len - 1)}}


class CausalMatmulSDPA(nn.Module):
    """Causal GQA attention from MatMul/Softmax and an arange mask; slots into `Attention.sdpa`.
    (The default slot picks `is_causal` from the sequence length, which a dynamic export cannot.)"""

    def forward(self, q, k, v, start_pos):  # q: [1, S, H, D]; k, v: [1, S, Hkv, D]
        rep = q.shape[2] // k.shape[2]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(rep, dim=1), v.transpose(1, 2).repeat_interleave(rep, dim=1)
        s = q.shape[2]
        scores = torch.matmul(q, k.transpose(2, 3)) * q.shape[-1] ** -0.5  # [1, H, S, S]
        future = torch.arange(s)[None, :] > torch.arange(s)[:, None]
        out = torch.matmul(scores.masked_fill(future, float("-inf")).softmax(dim=-1), v)
        return out.transpose(1, 2)  # [1, S, H, D]


class FullSequenceDecoder(nn.Module):
    """ONNX's decode piece: the whole context so far in, no cache (plain MatMul/Softmax attention).

    embeds [1, S, dim], S >= 2 -> logits [1, vocab] for the last position. The runner keeps the
    context and re-runs it per token (quadratic, but every ONNX runtime runs it as is)."""

    def __init__(self, model: Llama, max_seq_len: int):
        super().__init__()
        model = copy.deepcopy(model)
        model.embed_tokens = nn.Identity()
        for layer in model.layers:
            layer.self_attn.sdpa = CausalMatmulSDPA()
        model.rope_cos = model.rope_cos[:max_seq_len].clone()  # [max_seq_len, head_dim]
        model.rope_sin = model.rope_sin[:max_seq_len].clone()
        self.model = model
        self.max_seq_len = max_seq_len

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.hidden_from_embeds(embeds, 0)[:, -1, :])

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.zeros(1, 3, self.model.args.dim),)

    def dynamic_shapes(self):
        # min 2: a 1-token context is never run (the prompt is longer), and S > 1 keeps attention causal
        return {"embeds": {1: torch.export.Dim("seq", min=2, max=self.max_seq_len)}}
