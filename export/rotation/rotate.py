"""Folding orthogonal rotations into weights, float64 throughout and cast once.

Row-vector convention, as nn.Linear computes y = x W^T + b:
- a linear reading a rotated input x R:      W <- W R           (y unchanged)
- a linear whose output should become y R:   W <- R^T W, b <- b R
- per-head versions apply a [head_dim, head_dim] R to each head's block of rows/columns.
R1 ([dim, dim]) rotates the residual stream: embedding rows and the writers (o, down) rotate
their output, the readers (q, k, v, gate, up, head) their input. R2 ([head_dim]^2, per layer)
rotates each value head (v_proj output, o_proj input); attention mixes tokens, not channels,
so softmax(q k^T) (v R2) = (softmax(q k^T) v) R2.
"""

from __future__ import annotations

import torch
from torch import nn


def _set(param: torch.Tensor, value64: torch.Tensor) -> None:
    param.data = value64.to(param.dtype)


def rotate_input(linear: nn.Linear, r: torch.Tensor) -> None:
    """W <- W R: the linear now reads x R and computes what it computed on x."""
    _set(linear.weight, linear.weight.detach().double() @ r.double())


def rotate_output(linear: nn.Linear, r: torch.Tensor) -> None:
    """W <- R^T W, b <- b R: the linear now outputs y R."""
    r = r.double()
    _set(linear.weight, r.T @ linear.weight.detach().double())
    if linear.bias is not None:
        _set(linear.bias, linear.bias.detach().double() @ r)


def rotate_embedding(embedding: nn.Embedding, r: torch.Tensor) -> None:
    """Rows E <- E R."""
    _set(embedding.weight, embedding.weight.detach().double() @ r.double())


def rotate_head_outputs(linear: nn.Linear, r: torch.Tensor, n_heads: int) -> None:
    """Each head's output block y_h <- y_h R (W: [n_heads * d, in])."""
    r = r.double()
    w = linear.weight.detach().double().unflatten(0, (n_heads, -1))  # [H, d, in]
    _set(linear.weight, torch.einsum("de,hdi->hei", r, w).flatten(0, 1))
    if linear.bias is not None:
        _set(linear.bias, (linear.bias.detach().double().unflatten(0, (n_heads, -1)) @ r).flatten())


def rotate_head_inputs(linear: nn.Linear, r: torch.Tensor, n_heads: int) -> None:
    """Each head's input block now arrives as x_h R (W: [out, n_heads * d])."""
    w = linear.weight.detach().double().unflatten(1, (n_heads, -1))  # [out, H, d]
    _set(linear.weight, torch.einsum("ohd,de->ohe", w, r.double()).flatten(1, 2))


def fold_r1(slots, r1: torch.Tensor) -> None:
    """R1 into embedding, readers, writers and head (norms must be fused first)."""
    rotate_embedding(slots.embedding, r1)
    for layer in slots.layers:
        for lin in layer.attn_inputs + layer.mlp_inputs:
            rotate_input(lin, r1)
        for lin in layer.outputs:
            rotate_output(lin, r1)
    rotate_input(slots.head, r1)


def fold_r2(slots, r2: list[torch.Tensor]) -> None:
    """One R2 per layer into v_proj's kv heads and o_proj's heads."""
    for layer, r in zip(slots.layers, r2, strict=True):
        rotate_head_outputs(layer.values, r, layer.n_kv_heads)
        rotate_head_inputs(layer.attn_out, r, layer.n_heads)
