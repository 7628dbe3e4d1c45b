"""Norm fusion before rotating: RMSNorm gammas fold into the linears that read the norm, so the
norms become scale-free and commute with any orthogonal R1 (RMSNorm(x R) = RMSNorm(x) R).

Embedding centring (subtracting each embedding row's mean, as QuaRot/SpinQuant do) is exact
only for LayerNorm models, whose norm removes the mean anyway. RMSNorm does not, so on a
Llama-family model centring changes the function; `fuse_rms_norms` does not centre, and
`center_embeddings` is kept for LayerNorm families.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_scale_into_inputs(scale: torch.Tensor, linears: list[nn.Linear]) -> None:
    """W <- W diag(scale) for every linear that reads a tensor scaled by `scale` ([in])."""
    s = scale.detach().double()
    for lin in linears:
        w = lin.weight
        w.data = (w.detach().double() * s[None, :]).to(w.dtype)


def fold_norm(norm: nn.Module, readers: list[nn.Linear]) -> None:
    """Fold an RMSNorm's gamma into its readers and set the gamma to ones."""
    fold_scale_into_inputs(norm.weight, readers)
    norm.weight.data = torch.ones_like(norm.weight)


def fuse_rms_norms(slots) -> None:
    """Every RMSNorm gamma into the next linears (q/k/v, gate/up, head); `slots`: DecoderSlots."""
    slots.untie()  # the head gets the final norm's gamma, the embedding must not
    for layer in slots.layers:
        fold_norm(layer.attn_norm, layer.attn_inputs)
        fold_norm(layer.mlp_norm, layer.mlp_inputs)
    fold_norm(slots.final_norm, [slots.head])


def center_embeddings(embedding: nn.Embedding) -> None:
    """Subtract each row's mean (exact only when the first norm is a LayerNorm)."""
    w = embedding.weight
    w64 = w.detach().double()
    w.data = (w64 - w64.mean(dim=-1, keepdim=True)).to(w.dtype)
