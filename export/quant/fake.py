"""Simulated (fake) quantization with the paper's settings, differentiable by the
straight-through estimator so rotations can be learned through it.

- weights: symmetric signed RTN, per output channel or per group of `group` input channels;
  optional clipping-ratio search (per row, minimum MSE), as SpinQuant's `w_clip` does for RTN
- activations: per-token asymmetric (one scale and zero point per row of the last dim)
- KV cache: per-head asymmetric (k, v: [B, S, H, D], one scale per token and head = last dim)
"""

from __future__ import annotations

import torch
from torch import nn

CLIP_GRID = tuple(1.0 - 0.05 * i for i in range(10))  # 1.0 .. 0.55


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward q, backward identity."""
    return x + (q - x).detach()


def _symmetric(w: torch.Tensor, bits: int, clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """w: [rows, k] -> dequantized RTN with one scale per row."""
    qmax = 2 ** (bits - 1) - 1
    scale = (w.detach().abs().amax(dim=-1, keepdim=True) * clip / qmax).clamp_min(1e-8)
    return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale


def _best_clip(w: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, 1] clipping ratio from CLIP_GRID minimising each row's squared error."""
    errs = torch.stack([(_symmetric(w, bits, c) - w).pow(2).sum(-1) for c in CLIP_GRID])  # [G, rows]
    return torch.tensor(CLIP_GRID, dtype=w.dtype, device=w.device)[errs.argmin(0)].unsqueeze(-1)


def fake_quant_weight(w: torch.Tensor, bits: int, group: int | None = None, clip_search: bool = False) -> torch.Tensor:
    """w: [out, in] -> same shape, on the `bits`-bit symmetric grid (STE gradient).

    group None = per output channel; else groups of `group` consecutive input channels."""
    if bits >= 16:
        return w
    rows = w if group is None else w.reshape(-1, group)
    clip = _best_clip(rows.detach(), bits) if clip_search else 1.0
    return _ste(w, _symmetric(rows, bits, clip).reshape(w.shape))


def quantize_weight_rtn(
    w: torch.Tensor, bits: int, group: int | None = None, clip_search: bool = True
) -> tuple[torch.Tensor, float]:
    """-> (dequantized weight, relative Frobenius error) for a static weight."""
    with torch.no_grad():
        q = fake_quant_weight(w.float(), bits, group, clip_search)
        return q.to(w.dtype), float((q - w).norm() / w.norm().clamp_min(1e-12))


def fake_quant_tokens(x: torch.Tensor, bits: int, clip: float = 1.0) -> torch.Tensor:
    """Per-row (token, or token x head) asymmetric quantization over the last dim (STE)."""
    if bits >= 16:
        return x
    qmax = 2**bits - 1
    xd = x.detach()
    lo, hi = xd.amin(-1, keepdim=True) * clip, xd.amax(-1, keepdim=True) * clip
    scale = ((hi - lo) / qmax).clamp_min(1e-8)
    zero = torch.round(-lo / scale)
    q = (torch.clamp(torch.round(x / scale) + zero, 0, qmax) - zero) * scale
    return _ste(x, q)


class ActQuant(nn.Module):
    """Per-token (or per-head for K/V) asymmetric fake quantization of a tensor's last dim."""

    def __init__(self, bits: int, clip: float = 1.0):
        super().__init__()
        self.bits, self.clip = bits, clip

    def forward(self, x):
        return fake_quant_tokens(x, self.bits, self.clip)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, clip={self.clip}"
