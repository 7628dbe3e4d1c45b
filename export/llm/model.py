"""A compact Llama-family decoder: GQA, RoPE (incl. llama3 scaling), RMSNorm, SwiGLU,
tied or untied embeddings, optional Qwen2-style q/k/v bias.

Parameter names follow HF's LlamaForCausalLM (minus the `model.` prefix) so checkpoints
load without renaming. Every place a later transform hooks in (the attention kernel, the
online Hadamards of SpinQuant's R3/R4, activation/KV fake-quant) is an `nn.Module` slot
that defaults to identity, so transforms swap modules and never edit this file.
Tensor layout inside attention is [B, S, H, D] (ExecuTorch's custom SDPA layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaArgs:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # llama3-style scaling as sorted (key, value) pairs, hashable for the frozen dataclass
    rope_scaling: tuple[tuple[str, float], ...] | None = None
    tie_embeddings: bool = True
    qkv_bias: bool = False
    max_position: int = 8192

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")


def rope_inv_freq(args: LlamaArgs) -> torch.Tensor:
    """[head_dim // 2] inverse frequencies, float64, with llama3 scaling when configured."""
    d = args.head_dim
    inv = 1.0 / (args.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    if not args.rope_scaling:
        return inv
    s = dict(args.rope_scaling)
    if s.get("rope_type", "llama3") not in ("llama3",):
        raise ValueError(f"rope scaling {s} is not supported (only llama3-style)")
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    low_wavelen, high_wavelen = old_len / low, old_len / high
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    mid = (1 - smooth) * scaled / factor + smooth * scaled
    is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_mid, mid, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class CausalSDPA(nn.Module):
    """Full-sequence causal attention without a cache (eager evaluation, calibration)."""

    def forward(self, q, k, v, start_pos):  # q: [B, S, H, D]; k, v: [B, S, Hkv, D]
        rep = q.shape[2] // k.shape[2]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)
        return out.transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        bias = args.qkv_bias
        self.q_proj = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=bias)
        self.k_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=bias)
        self.v_proj = nn.Linear(args.dim, args.n_kv_heads * args.head_dim, bias=bias)
        self.o_proj = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.qk_rotate = nn.Identity()  # R3: online Hadamard on q and k after RoPE
        self.k_quant = nn.Identity()  # KV-cache fake quantization slots
        self.v_quant = nn.Identity()
        self.sdpa: nn.Module = CausalSDPA()

    def project(self, x):  # x: [B, S, dim] -> q [B, S, H, D], k and v [B, S, Hkv, D]
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, s, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, s, self.n_kv_heads, self.head_dim)
        return q, k, v

    def forward(self, x, cos, sin, start_pos):  # x: [B, S, dim]; cos/sin: [S, 1, head_dim]
        b, s, _ = x.shape
        q, k, v = self.project(x)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        q, k = self.qk_rotate(q), self.qk_rotate(k)
        k, v = self.k_quant(k), self.v_quant(v)
        out = self.sdpa(q, k, v, start_pos)  # [B, S, H, D]
        return self.o_proj(out.reshape(b, s, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.up_proj = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.down_proj = nn.Linear(args.ffn_dim, args.dim, bias=False)
        self.down_rotate = nn.Identity()  # R4: online Hadamard on the down_proj input

    def forward(self, x):
        return self.down_proj(self.down_rotate(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.input_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = MLP(args)

    def forward(self, x, cos, sin, start_pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, start_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        freqs = torch.outer(torch.arange(args.max_position, dtype=torch.float64), rope_inv_freq(args))
        emb = torch.cat((freqs, freqs), dim=-1)  # [max_position, head_dim]
        self.register_buffer("rope_cos", emb.cos().float(), persistent=False)
        self.register_buffer("rope_sin", emb.sin().float(), persistent=False)

    def hidden(self, tokens: torch.Tensor, start_pos=0) -> torch.Tensor:
        """tokens: [B, S] -> final-normed hidden states [B, S, dim]."""
        return self.hidden_from_embeds(self.embed_tokens(tokens), start_pos)

    def hidden_from_embeds(self, x: torch.Tensor, start_pos=0) -> torch.Tensor:
        """x: [B, S, dim] input embeddings (text or projected visual tokens) -> [B, S, dim]."""
        s = x.shape[1]
        cos = self.rope_cos.narrow(0, start_pos, s).unsqueeze(1)  # [S, 1, head_dim]
        sin = self.rope_sin.narrow(0, start_pos, s).unsqueeze(1)
        for layer in self.layers:
            x = layer(x, cos, sin, start_pos)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor, start_pos=0) -> torch.Tensor:
        """tokens: [B, S] -> logits [B, S, vocab]."""
        return self.lm_head(self.hidden(tokens, start_pos))

    def linears(self):
        """Every transformer-block linear (what 4-bit quantization targets), by name."""
        return {n: m for n, m in self.named_modules() if isinstance(m, nn.Linear) and n.startswith("layers.")}
