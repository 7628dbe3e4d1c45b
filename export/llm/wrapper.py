"""The LLM export wrapper: a static KV cache and one `forward(tokens, input_pos) -> logits`.

    tokens:    [1, S] int64, S in 1..max_seq_len-1 (prefill: S prompt tokens; decode: S = 1)
    input_pos: [1] int64, position of tokens[0, 0] in the cache
    logits:    [1, vocab] fp32, for the last position only (what generation needs)

The cache lives in mutable buffers [1, max_seq_len, n_kv_heads, head_dim] written at
input_pos by ExecuTorch's `llama::update_cache`; attention is `llama::custom_sdpa`, which
reads only positions < input_pos + S, so stale entries past the current context never
leak in and a new conversation just starts again at input_pos 0. Both ops have eager CPU
kernels, so the unlowered wrapper is the exact reference for the lowered program.

With `kv_cache_bits=8` the cache holds int8 values with a scale and zero point per position
and head (asymmetric, per token: ExecuTorch's `quantized_decomposed` per-token ops, the layout
export_llm's `--quantize_kv_cache` uses), and attention is `llama::custom_quantized_sdpa`,
which also quantizes q per token. Its result equals fp32 attention over the dequantized q, k
and v (`simulate_int8_kv_attention`, the pure-PyTorch statement of that math the tests hold
the op to). With SpinQuant the R3 Hadamard has already rotated q and k, which is what makes
the int8 keys accurate.
"""

from __future__ import annotations

import copy

import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers llama:: ops)
import torch
from torch import nn
from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401  (per-token ops)

from export.llm.fused import fuse_projections
from export.llm.model import Llama
from export.rotation.online import with_mode

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


INT8 = (-128, 127)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [..., D] -> int8 values, fp32 scales [..., 1], int8 zero points [..., 1] (asymmetric,
    one scale per row of the last dim)."""
    scales, zeros = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric.default(x, torch.int8)
    q = torch.ops.quantized_decomposed.quantize_per_token(x, scales, zeros, *INT8, torch.int8)
    return q, scales.to(torch.float32), zeros.to(torch.int8)


class Int8KVCacheSDPA(nn.Module):
    """Attention over a static int8 cache (per-token asymmetric); slots into `Attention.sdpa`."""

    def __init__(self, n_kv_heads: int, head_dim: int, max_seq_len: int):
        super().__init__()
        shape, per_token = (1, max_seq_len, n_kv_heads, head_dim), (1, max_seq_len, n_kv_heads, 1)
        for name in ("k", "v"):
            self.register_buffer(f"{name}_cache", torch.zeros(shape, dtype=torch.int8), persistent=False)
            self.register_buffer(f"{name}_scales", torch.ones(per_token), persistent=False)
            self.register_buffer(f"{name}_zero_points", torch.zeros(per_token, dtype=torch.int8), persistent=False)

    def forward(self, q, k, v, start_pos):  # q: [1, S, H, D]; k, v: [1, S, Hkv, D]
        for name, x in (("k", k), ("v", v)):
            values, scales, zeros = quantize_per_token(x)
            torch.ops.llama.update_cache(values, getattr(self, f"{name}_cache"), start_pos)
            torch.ops.llama.update_cache(scales, getattr(self, f"{name}_scales"), start_pos)
            torch.ops.llama.update_cache(zeros, getattr(self, f"{name}_zero_points"), start_pos)
        q_values, q_scales, q_zeros = quantize_per_token(q)
        return torch.ops.llama.custom_quantized_sdpa(
            q_values,
            self.k_cache,
            self.v_cache,
            start_pos,
            None,
            0.0,
            True,
            None,
            q_zeros,
            q_scales,
            self.k_zero_points,
            self.k_scales,
            self.v_zero_points,
            self.v_scales,
        )


def simulate_int8_kv_attention(q, k, v, start_pos: int) -> torch.Tensor:
    """What `Int8KVCacheSDPA` computes for q [1, S, H, D] at positions start_pos.. over the
    cache k, v [1, start_pos + S, Hkv, D], in plain PyTorch: q, k and v quantized and
    dequantized per token (int8, asymmetric), then causal fp32 attention (GQA: each kv head
    serves H / Hkv query heads)."""

    def fake(x):
        values, scales, zeros = quantize_per_token(x)
        return (values.float() - zeros.float()) * scales

    q, k, v = (fake(t).transpose(1, 2) for t in (q, k, v))  # [1, heads, len, D]
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s, total = q.shape[2], k.shape[2]
    mask = torch.arange(total)[None, :] <= (start_pos + torch.arange(s))[:, None]
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2)  # [1, S, H, D]


KV_BYTES_PER_TOKEN = {  # per position, head and layer, for K or V, as a function of head_dim
    "fp32": lambda d: 4 * d,
    "fp16": lambda d: 2 * d,
    "int8": lambda d: d + 4 + 1,  # int8 values, an fp32 scale and an int8 zero point
}


def kv_cache_mb(args, max_seq_len: int, dtype: str) -> float:
    """The whole KV cache (K and V, every layer) at `max_seq_len` positions, in MiB."""
    return 2 * args.n_layers * max_seq_len * args.n_kv_heads * KV_BYTES_PER_TOKEN[dtype](args.head_dim) / 2**20


class CachedDecoder(nn.Module):
    def __init__(self, model: Llama, max_seq_len: int, kv_cache_bits: int = 0, fast_hadamard: bool = False):
        super().__init__()
        if kv_cache_bits not in (0, 8):
            raise ValueError(f"kv_cache_bits={kv_cache_bits}: 0 (fp32) or 8 (int8)")
        model = copy.deepcopy(model)
        args = model.args
        self.max_seq_len, self.kv_cache_bits = max_seq_len, kv_cache_bits
        sdpa = Int8KVCacheSDPA if kv_cache_bits == 8 else StaticKVCacheSDPA
        for layer in model.layers:
            layer.self_attn.sdpa = sdpa(args.n_kv_heads, args.head_dim, max_seq_len)
        # q|k|v and gate|up as one 8da4w GEMM each (one dynamic activation quantization per input)
        fuse_projections(model)
        # fast_hadamard: online Hadamards (R3, R4) through ExecuTorch's O(p log p) kernel instead
        # of a p x p GEMM (R4 10.4% -> 4.4% of a prefill); off by default: with it LongVU's decoder
        # parity fell below its bar (teacher-forced top-1 0.875, cosine min 0.9898), not yet understood
        if fast_hadamard:
            with_mode(model, "fast")
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
