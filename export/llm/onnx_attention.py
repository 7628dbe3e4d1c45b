"""Attention with a past/present KV cache as one onnxruntime GroupQueryAttention node.

`torch.ops.handheld.gqa` is a custom op whose eager body is plain causal GQA over past ++ new
keys (the parity reference computes exactly this); the ONNX exporter translates it into
com.microsoft GroupQueryAttention (onnxruntime's fused kernel, the one onnxruntime-genai's
builder emits), so decode no longer runs concat + MatMul + mask + Softmax + MatMul per layer.

    q [1, S, H*D], k, v [1, S, Hkv*D] (RoPE and R3 already applied), past_k, past_v [1, Hkv, P, D]
    -> out [1, S, H*D], present_k, present_v [1, Hkv, P + S, D]
Query i sits at position P + i and sees keys 0 .. P + i (prefill, chunked prefill and decode).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.library.custom_op("handheld::gqa", mutates_args=())
def gqa(q: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, num_heads: int, kv_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    b, s, _ = q.shape
    d = q.shape[-1] // num_heads
    keys = torch.cat((past_k, k.view(b, s, kv_heads, d).transpose(1, 2)), dim=2)  # [b, Hkv, T, D]
    values = torch.cat((past_v, v.view(b, s, kv_heads, d).transpose(1, 2)), dim=2)
    t, rep = keys.shape[2], num_heads // kv_heads
    # query heads grouped per kv head: [b, Hkv, rep * S, D], row r * S + i = head r of the group, query i
    qh = q.view(b, s, kv_heads, rep, d).permute(0, 2, 3, 1, 4).reshape(b, kv_heads, rep * s, d)
    scores = torch.matmul(qh, keys.transpose(2, 3)) * (1.0 / math.sqrt(d))
    q_pos = (t - s) + torch.arange(s, device=q.device).repeat(rep)
    scores = scores.masked_fill(torch.arange(t, device=q.device)[None, :] > q_pos[:, None], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), values)  # [b, Hkv, rep * S, D]
    out = out.view(b, kv_heads, rep, s, d).permute(0, 3, 1, 2, 4).reshape(b, s, num_heads * d)
    return out, keys, values


@gqa.register_fake
def _gqa_fake(q, k, v, past_k, past_v, num_heads, kv_heads):
    b, s, _ = q.shape
    t = past_k.shape[2] + s
    return q.new_empty(q.shape), past_k.new_empty(b, kv_heads, t, past_k.shape[3]), past_v.new_empty(b, kv_heads, t, past_v.shape[3])


def _register_schema() -> None:
    """onnxscript builds nodes from an OpSchema; onnx does not know onnxruntime's contrib ops."""
    import onnx
    from onnx.defs import OpSchema

    try:
        onnx.defs.get_schema("GroupQueryAttention", 1, "com.microsoft")
        return
    except Exception:  # not registered yet
        pass
    p, attr = OpSchema.FormalParameter, OpSchema.Attribute
    onnx.defs.register_schema(
        OpSchema(
            "GroupQueryAttention",
            "com.microsoft",
            1,
            inputs=[p("query", "T"), p("key", "T"), p("value", "T"), p("past_key", "T"), p("past_value", "T"), p("seqlens_k", "M"), p("total_sequence_length", "M")],
            outputs=[p("output", "T"), p("present_key", "T"), p("present_value", "T")],
            type_constraints=[("T", ["tensor(float)"], ""), ("M", ["tensor(int32)"], "")],
            attributes=[attr("num_heads", OpSchema.AttrType.INT, ""), attr("kv_num_heads", OpSchema.AttrType.INT, "")],
        )
    )


def onnx_translations() -> dict:
    """`custom_translation_table` for `torch.onnx.export(dynamo=True)`."""
    import onnxscript
    from onnxscript import INT32
    from onnxscript import opset18 as op

    _register_schema()
    msft = onnxscript.values.Opset("com.microsoft", 1)

    def gqa_onnx(q, k, v, past_k, past_v, num_heads: int, kv_heads: int):
        total = op.Add(op.Shape(past_k, start=2, end=3), op.Shape(k, start=1, end=2))  # [1] = P + S
        seqlens_k = op.Cast(op.Sub(total, op.Constant(value_ints=[1])), to=INT32.dtype)  # [batch]
        total_len = op.Cast(op.Squeeze(total), to=INT32.dtype)  # scalar
        return msft.GroupQueryAttention(q, k, v, past_k, past_v, seqlens_k, total_len, num_heads=num_heads, kv_num_heads=kv_heads)

    return {torch.ops.handheld.gqa.default: gqa_onnx}
