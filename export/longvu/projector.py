"""The projector from SigLIP patch tokens to the LLM's embedding space, at two resolutions.

LongVU keeps the top-k frames at 12 x 12 = 144 tokens and the rest at 8 x 8 = 64: the SigLIP
grid (14 x 14 for siglip-base-224, 27 x 27 for so400m-384) is average-pooled to both grids,
then a LLaVA-style two-layer GELU MLP (`mm_projector.0` / `mm_projector.2`) maps each token.
The pooling is a fixed matrix product (adaptive average pooling written as [out*out, g*g]),
which every backend runs as a plain matmul.
"""

from __future__ import annotations

import torch
from torch import nn


def pooling_matrix_1d(src: int, out: int) -> torch.Tensor:
    """[out, src] rows averaging the cells adaptive_avg_pool1d would: [floor(i*src/out), ceil((i+1)*src/out))."""
    m = torch.zeros(out, src, dtype=torch.float64)
    for i in range(out):
        lo, hi = (i * src) // out, -(-((i + 1) * src) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def pooling_matrix(src: int, out: int) -> torch.Tensor:
    """[out*out, src*src] fp32: row-major 2-D adaptive average pooling of a src x src grid."""
    m = pooling_matrix_1d(src, out)
    return torch.kron(m, m).float()


class Projector(nn.Module):
    """siglip tokens [B, g*g, vision_dim] -> (hi [B, hi*hi, llm_dim], lo [B, lo*lo, llm_dim])."""

    def __init__(self, vision_dim: int, llm_dim: int, grid: int, hi_grid: int, lo_grid: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(vision_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))
        self.register_buffer("pool_hi", pooling_matrix(grid, hi_grid), persistent=False)
        self.register_buffer("pool_lo", pooling_matrix(grid, lo_grid), persistent=False)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hi = torch.matmul(self.pool_hi, tokens)  # [B, hi*hi, vision_dim]
        lo = torch.matmul(self.pool_lo, tokens)
        return self.mlp(hi), self.mlp(lo)
