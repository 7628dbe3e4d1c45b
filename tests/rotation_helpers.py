"""Tiny random Llama models with odd sizes for the rotation tests."""

from __future__ import annotations

import torch

from export.llm.model import Llama, LlamaArgs

# dim 48 = 12 x 4, head_dim 12 (Paley), ffn 80 = 20 x 4: every Hadamard is non-Sylvester
TINY = LlamaArgs(
    vocab_size=101,
    dim=48,
    n_layers=3,
    n_heads=6,
    n_kv_heads=2,
    head_dim=12,
    ffn_dim=80,
    qkv_bias=True,
    tie_embeddings=True,
    max_position=64,
)


def tiny_llama(args: LlamaArgs = TINY, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    m = Llama(args).eval().requires_grad_(False)
    for p in m.parameters():
        p.data.normal_(0, 0.3)
    for layer in m.layers:  # non-trivial gammas, and an outlier channel as real LLMs have
        layer.input_layernorm.weight.data.uniform_(0.5, 1.5)
        layer.post_attention_layernorm.weight.data.uniform_(0.5, 1.5)
    m.norm.weight.data.uniform_(0.5, 1.5)
    m.embed_tokens.weight.data[:, 5] *= 20
    return m


def tokens(n: int = 2, s: int = 19, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (n, s), generator=torch.Generator().manual_seed(seed))
