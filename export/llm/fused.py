"""Linears that read the same input, run as one: q|k|v and gate|up.

One GEMM instead of three (two), and with 8da4w one dynamic int8 quantization of the input
instead of three (two). Weight quantization groups run along the input dim, so every output
row keeps its integers and scales: the fused linear computes exactly what the separate ones
did, and the eager simulation and GPTQ stay per-linear. Used by the ExecuTorch wrapper
(export/llm/wrapper.py) and the ONNX wrapper (export/llm/wrapper_onnx.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.llm.model import MLP, Attention


def concat_rows(weights: list[torch.Tensor]) -> torch.Tensor:
    """[N_i, K] weights -> [sum N_i, K]: float tensors, or torchao's quantized weight tensors
    (integers, scales and zero points joined, per-row groups only)."""
    first = weights[0]
    names = getattr(first, "tensor_data_names", None)
    if names is None:
        return torch.cat([w.detach() for w in weights])
    attrs = [getattr(first, a) for a in first.tensor_attribute_names]
    for w in weights[1:]:
        if type(w) is not type(first) or [getattr(w, a) for a in first.tensor_attribute_names] != attrs:
            raise ValueError("fused linears need one weight format")
    if first.block_size[0] != 1:
        raise ValueError(f"quantization blocks {first.block_size} span rows: they cannot be joined row-wise")
    return type(first)(*(torch.cat([getattr(w, n) for w in weights]) for n in names), *attrs)


def fuse_linears(linears: list[nn.Linear]) -> nn.Linear:
    """One linear whose output is the concatenation of `linears`' outputs (same input)."""
    bias = linears[0].bias is not None
    fused = nn.Linear(linears[0].in_features, sum(l.out_features for l in linears), bias=bias)
    fused.weight = nn.Parameter(concat_rows([l.weight for l in linears]), requires_grad=False)
    if bias:
        fused.bias = nn.Parameter(torch.cat([l.bias.detach() for l in linears]), requires_grad=False)
    return fused


def fusible(linears: list[nn.Module]) -> bool:
    """Plain linears (float or torchao-quantized) of one weight format; the eager stand-ins
    (`SimulatedQuantLinear`) are left as they are."""
    if not all(type(l) is nn.Linear for l in linears):
        return False
    first = linears[0].weight
    return all(type(l.weight) is type(first) for l in linears)


class QKVAttention(Attention):
    """The model's attention with q|k|v as one linear; everything after the projection (RoPE,
    the R3 slot, KV fake-quant, the sdpa slot, o_proj) is the model's own."""

    def __init__(self, attn: Attention):
        nn.Module.__init__(self)
        self.n_heads, self.n_kv_heads, self.head_dim = attn.n_heads, attn.n_kv_heads, attn.head_dim
        self.qkv_proj = fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        self.o_proj, self.qk_rotate, self.sdpa = attn.o_proj, attn.qk_rotate, attn.sdpa
        self.k_quant, self.v_quant = attn.k_quant, attn.v_quant

    def project(self, x):
        b, s, _ = x.shape
        kv = self.n_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(x).split([self.n_heads * self.head_dim, kv, kv], dim=-1)
        return (
            q.view(b, s, self.n_heads, self.head_dim),
            k.view(b, s, self.n_kv_heads, self.head_dim),
            v.view(b, s, self.n_kv_heads, self.head_dim),
        )


class GateUpMLP(nn.Module):
    """The model's MLP with gate|up as one linear (the R4 slot `down_rotate` kept as it is)."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.ffn_dim = mlp.gate_proj.out_features
        self.gate_up_proj = fuse_linears([mlp.gate_proj, mlp.up_proj])
        self.down_rotate, self.down_proj = mlp.down_rotate, mlp.down_proj

    def forward(self, x):
        gate, up = self.gate_up_proj(x).split(self.ffn_dim, dim=-1)
        return self.down_proj(self.down_rotate(F.silu(gate) * up))


def fuse_projections(model: nn.Module) -> int:
    """In place: every block whose q/k/v (gate/up) linears are fusible runs them as one.
    Returns how many fused linears were made."""
    made = 0
    for layer in model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if type(attn) is Attention and fusible([attn.q_proj, attn.k_proj, attn.v_proj]):
            layer.self_attn = QKVAttention(attn)
            made += 1
        if type(mlp) is MLP and fusible([mlp.gate_proj, mlp.up_proj]):
            layer.mlp = GateUpMLP(mlp)
            made += 1
    return made
