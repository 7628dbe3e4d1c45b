"""Shared pieces for the LongVU tests: a tiny random decoder with SmolLM2's real tokenizer."""

from __future__ import annotations

import torch

from export.llm.checkpoint import Checkpoint
from export.llm.model import Llama, LlamaArgs

TINY_LLM = LlamaArgs(
    vocab_size=49152, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=96, max_position=2048
)


def tiny_checkpoint(seed: int = 0) -> Checkpoint:
    """Random 2-layer decoder (8da4w-compatible widths) + the offline SmolLM2 tokenizer."""
    from transformers import AutoTokenizer

    from export.llm.checkpoint import demo_checkpoint

    gguf = demo_checkpoint()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(seed)
    model = Llama(TINY_LLM)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    model.eval().requires_grad_(False)
    return Checkpoint(model, tok, "tiny random llama", "llama", tok.bos_token_id, (int(tok.eos_token_id),))
