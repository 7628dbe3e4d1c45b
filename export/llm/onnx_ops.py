"""The decoder's hot ops as onnxruntime's fused contrib kernels (the ones its model builder emits).

Each is a torch custom op whose eager body is the plain math (what the parity reference
computes), translated at ONNX export into one com.microsoft node:

- `handheld::gqa_rope` -> GroupQueryAttention, packed q|k|v in, RoPE inside (do_rotary), a
  fixed-size KV cache:
      qkv [1, S, (H + 2 Hkv) D] (before RoPE), cache_k, cache_v [1, Hkv, L, D] (L = max length),
      seqlens_k [1] int32 (= P + S - 1), total_len [] int32 (= P + S), P = the new tokens' start,
      cos_cache, sin_cache [L, D / 2]
      -> out [1, S, H D], new_k, new_v [1, Hkv, L, D]: the caches with positions P .. P + S - 1
         written; positions >= P + S are never read.
  Query i sits at position P + i and sees keys 0 .. P + i (prefill, chunked prefill, decode).
  When the runner binds new_k/new_v to the cache_k/cache_v buffers, onnxruntime writes the new
  keys in place (its past/present buffer sharing): no cache copy per step.
  The rotary convention is the half-split one of `export.llm.model.rotate_half`.
- `handheld::gqa_lengths(input_pos, x)` -> (seqlens_k, total_len): computed once per graph and
  shared by every attention node.
- `handheld::skip_rms_norm(x, skip, weight, eps)` -> (weight * rms_normalize(x + skip), x + skip):
  SkipSimplifiedLayerNormalization, the residual add and the next RMSNorm as one kernel.

The model file is untouched: `export/llm/wrapper_onnx.py` composes these ops into its own forward.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [1, S, heads, D]; cos/sin: [S, D / 2] -> RoPE'd x (half-split pairs, as the model)."""
    c = torch.cat((cos, cos), dim=-1)[None, :, None, :]
    s = torch.cat((sin, sin), dim=-1)[None, :, None, :]
    x1, x2 = x.chunk(2, dim=-1)
    return x * c + torch.cat((-x2, x1), dim=-1) * s


def causal_gqa(q: Tensor, keys: Tensor, values: Tensor, num_heads: int) -> Tensor:
    """q [b, S, H, D]; keys/values [b, Hkv, T, D] (the last S are the queries' own positions)
    -> [b, S, H * D]."""
    b, s, _, d = q.shape
    kv_heads, t = keys.shape[1], keys.shape[2]
    rep = num_heads // kv_heads
    # query heads grouped per kv head: [b, Hkv, rep * S, D], row r * S + i = head r of the group, query i
    qh = q.view(b, s, kv_heads, rep, d).permute(0, 2, 3, 1, 4).reshape(b, kv_heads, rep * s, d)
    scores = torch.matmul(qh, keys.transpose(2, 3)) * (1.0 / math.sqrt(d))
    q_pos = (t - s) + torch.arange(s, device=q.device).repeat(rep)
    scores = scores.masked_fill(torch.arange(t, device=q.device)[None, :] > q_pos[:, None], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), values)  # [b, Hkv, rep * S, D]
    return out.view(b, kv_heads, rep, s, d).permute(0, 3, 1, 2, 4).reshape(b, s, num_heads * d)


@torch.library.custom_op("handheld::gqa_rope", mutates_args=())
def gqa_rope(
    qkv: Tensor,
    cache_k: Tensor,
    cache_v: Tensor,
    seqlens_k: Tensor,
    total_len: Tensor,
    cos_cache: Tensor,
    sin_cache: Tensor,
    num_heads: int,
    kv_heads: int,
) -> tuple[Tensor, Tensor, Tensor]:
    b, s, _ = qkv.shape
    d = cache_k.shape[3]
    end = int(total_len)
    p = end - s
    q, k, v = qkv.split([num_heads * d, kv_heads * d, kv_heads * d], dim=-1)
    cos, sin = cos_cache[p:end], sin_cache[p:end]
    q = apply_rope(q.reshape(b, s, num_heads, d), cos, sin)
    k = apply_rope(k.reshape(b, s, kv_heads, d), cos, sin)
    new_k, new_v = cache_k.clone(), cache_v.clone()
    new_k[:, :, p:end] = k.transpose(1, 2)
    new_v[:, :, p:end] = v.reshape(b, s, kv_heads, d).transpose(1, 2)
    return causal_gqa(q, new_k[:, :, :end], new_v[:, :, :end], num_heads), new_k, new_v


@gqa_rope.register_fake
def _gqa_rope_fake(qkv, cache_k, cache_v, seqlens_k, total_len, cos_cache, sin_cache, num_heads, kv_heads):
    b, s, _ = qkv.shape
    return (
        qkv.new_empty(b, s, num_heads * cache_k.shape[3]),
        cache_k.new_empty(cache_k.shape),
        cache_v.new_empty(cache_v.shape),
    )


@torch.library.custom_op("handheld::gqa_lengths", mutates_args=())
def gqa_lengths(input_pos: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    total = input_pos.reshape(1).to(torch.int32) + x.shape[1]
    return total - 1, total[0].clone()


@gqa_lengths.register_fake
def _gqa_lengths_fake(input_pos, x):
    return input_pos.new_empty(1, dtype=torch.int32), input_pos.new_empty((), dtype=torch.int32)


@torch.library.custom_op("handheld::skip_rms_norm", mutates_args=())
def skip_rms_norm(x: Tensor, skip: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    total = x + skip
    return weight * (total * torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps)), total


@skip_rms_norm.register_fake
def _skip_rms_norm_fake(x, skip, weight, eps):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _register_schemas() -> None:
    """onnxscript builds nodes from an OpSchema; onnx does not know onnxruntime's contrib ops."""
    import onnx
    from onnx.defs import OpSchema

    attr, kind = OpSchema.Attribute, OpSchema.AttrType

    def p(name: str, type_str: str, optional: bool = False):
        option = OpSchema.FormalParameterOption.Optional if optional else OpSchema.FormalParameterOption.Single
        return OpSchema.FormalParameter(name, type_str, param_option=option)

    schemas = {
        "GroupQueryAttention": dict(
            inputs=[
                p("query", "T"),
                p("key", "T", True),
                p("value", "T", True),
                p("past_key", "T"),
                p("past_value", "T"),
                p("seqlens_k", "M"),
                p("total_sequence_length", "M"),
                p("cos_cache", "T", True),
                p("sin_cache", "T", True),
            ],
            outputs=[p("output", "T"), p("present_key", "T"), p("present_value", "T")],
            type_constraints=[("T", ["tensor(float)"], ""), ("M", ["tensor(int32)"], "")],
            attributes=[
                attr("num_heads", kind.INT, ""),
                attr("kv_num_heads", kind.INT, ""),
                attr("do_rotary", kind.INT, ""),
                attr("rotary_interleaved", kind.INT, ""),
            ],
        ),
        "SkipSimplifiedLayerNormalization": dict(
            inputs=[p("input", "T"), p("skip", "T"), p("gamma", "T")],
            outputs=[
                p("output", "T"),
                p("mean", "U", True),
                p("inv_std_var", "U", True),
                p("input_skip_bias_sum", "T"),
            ],
            type_constraints=[("T", ["tensor(float)"], ""), ("U", ["tensor(float)"], "")],
            attributes=[attr("epsilon", kind.FLOAT, "")],
        ),
    }
    for name, fields in schemas.items():
        try:
            onnx.defs.get_schema(name, 1, "com.microsoft")
        except Exception:  # not registered yet
            onnx.defs.register_schema(OpSchema(name, "com.microsoft", 1, **fields))


def onnx_translations() -> dict:
    """`custom_translation_table` for `torch.onnx.export(dynamo=True)`."""
    import onnxscript
    from onnxscript import INT32
    from onnxscript import opset18 as op

    _register_schemas()
    msft = onnxscript.values.Opset("com.microsoft", 1)

    def lengths_onnx(input_pos, x):
        total = op.Add(op.Reshape(input_pos, op.Constant(value_ints=[1])), op.Shape(x, start=1, end=2))  # [1] = P + S
        return op.Cast(op.Sub(total, op.Constant(value_ints=[1])), to=INT32.dtype), op.Cast(
            op.Squeeze(total), to=INT32.dtype
        )

    def gqa_rope_onnx(qkv, cache_k, cache_v, seqlens_k, total_len, cos_cache, sin_cache, num_heads: int, kv_heads: int):
        return msft.GroupQueryAttention(
            qkv,
            None,
            None,
            cache_k,
            cache_v,
            seqlens_k,
            total_len,
            cos_cache,
            sin_cache,
            num_heads=num_heads,
            kv_num_heads=kv_heads,
            do_rotary=1,
            rotary_interleaved=0,
        )

    def skip_rms_norm_onnx(x, skip, weight, eps: float):
        out, _, _, total = msft.SkipSimplifiedLayerNormalization(x, skip, weight, epsilon=eps, _num_outputs=4)
        return out, total

    return {
        torch.ops.handheld.gqa_rope.default: gqa_rope_onnx,
        torch.ops.handheld.gqa_lengths.default: lengths_onnx,
        torch.ops.handheld.skip_rms_norm.default: skip_rms_norm_onnx,
    }
