"""The text-decoder pieces of LongVU: token embedding and an embeddings-in decoder.

LongVU feeds the LLM a sequence that is part text embeddings, part projected video tokens, so
the decoder takes embeddings instead of token ids:

    embed:  tokens [1, L] int64 -> embeds [1, L, dim]
    decode: embeds [1, S, dim] fp32, input_pos [1] int64 -> logits [1, vocab] (last position)

Both are built on the LLM export path's `CachedDecoder` (static KV cache with ExecuTorch's
`llama::update_cache` / `llama::custom_sdpa`) and `prepare_model` (rotations, then 8da4w), so
the decoder here is exactly the one `handheld export llm` produces, minus its token lookup.
The ONNX and CoreML decode pieces wrap the LLM's ONNX and CoreML wrappers the same way
(`PastKVEmbedsDecoder`, `StatefulEmbedsDecoder`).
"""

from __future__ import annotations

import torch
from torch import nn

from export.llm.model import Llama
from export.llm.wrapper import CachedDecoder
from export.llm.wrapper_coreml import StatefulDecoder
from export.llm.wrapper_onnx import PastKVDecoder, past_names
from runtime.coreml_runner import causal_mask


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


class PastKVEmbedsDecoder(PastKVDecoder):
    """ONNX's decode piece: the LLM ONNX wrapper (`PastKVDecoder`: ExecuTorch's position
    contract, the KV cache as fixed-size buffers in and out) with embeddings in instead of token ids.

    embeds [1, S, dim] fp32, input_pos [1] int64, past_{key,value}_{i} [1, n_kv_heads, L, head_dim]
    -> logits [1, vocab] (last position), present_{key,value}_{i}: the caches with positions
    input_pos .. input_pos + S - 1 written (bind them to the past buffers to update in place)."""

    def __init__(self, model: Llama, max_seq_len: int):
        super().__init__(model, max_seq_len)
        self.model.embed_tokens = nn.Identity()  # `hidden(embeds)` then starts at the blocks

    def example_inputs(self, seq_len: int = 3, pos: int = 5) -> tuple:
        return (torch.zeros(1, seq_len, self.model.args.dim), torch.tensor([pos]), *self.empty_cache())

    def input_names(self) -> list[str]:
        return ["embeds", "input_pos", *past_names(self.n_layers)]


class StatefulEmbedsDecoder(StatefulDecoder):
    """CoreML's decode piece: the LLM CoreML wrapper (`StatefulDecoder`: KV cache as
    `ct.StateType` states, write position from the mask's shape) with embeddings in.

    embeds [1, S, dim] fp32, causal_mask [1, 1, S, input_pos + S] -> logits [1, vocab] (last
    position); the runtime builds the mask from input_pos, as for the LLM."""

    def __init__(self, model: Llama, max_seq_len: int):
        super().__init__(model, max_seq_len)
        self.model.embed_tokens = nn.Identity()  # the table is the `embed` package's

    def forward(self, embeds: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        return self.logits_last(embeds, causal_mask, self.model.hidden_from_embeds)

    def example_inputs(self, seq_len: int = 3, input_pos: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, seq_len, self.model.args.dim), causal_mask(input_pos, seq_len)

    def dynamic_shapes(self):
        shapes = super().dynamic_shapes()
        return {"embeds": shapes["tokens"], "causal_mask": shapes["causal_mask"]}
