"""DINOv2 and SigLIP vision transformers with HF's state-dict layouts.

Module names mirror transformers' `Dinov2Model` and `SiglipVisionModel` (the latter without its
`vision_model.` prefix), so their checkpoints load with strict key matching. Both take pixels
[B, 3, H, W] in [0, 1] (normalization is inside, so exported pieces take plain RGB) and return
patch tokens [B, N, dim] after the final LayerNorm (DINOv2 drops its CLS token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from export.longvu.config import VitConfig, VitFamily


def attention(x: torch.Tensor, q: nn.Linear, k: nn.Linear, v: nn.Linear, out: nn.Linear, heads: int) -> torch.Tensor:
    """Multi-head self-attention. x: [B, N, dim] -> [B, N, dim]."""
    b, n, dim = x.shape
    split = lambda t: t.view(b, n, heads, dim // heads).transpose(1, 2)  # [B, heads, N, head_dim]
    # explicit softmax(q k^T / sqrt(d)) v: fully XNNPACK-delegable (SDPA's decomposition adds
    # NaN-guard ops that stay on portable kernels)
    scores = torch.matmul(split(q(x)), split(k(x)).transpose(-1, -2)) * (dim // heads) ** -0.5
    o = torch.matmul(scores.softmax(dim=-1), split(v(x)))
    return out(o.transpose(1, 2).reshape(b, n, dim))


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels):  # [B, 3, H, W] in [0, 1]
        return (pixels - self.mean) / self.std


# -- DINOv2 (transformers Dinov2Model) --------------------------------------------------------


class Dinov2PatchEmbeddings(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.projection = nn.Conv2d(3, c.dim, c.patch_size, stride=c.patch_size)


class Dinov2Embeddings(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        grid = c.pos_grid or c.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, c.dim))  # unused at inference; part of the layout
        self.position_embeddings = nn.Parameter(torch.zeros(1, grid * grid + 1, c.dim))
        self.patch_embeddings = Dinov2PatchEmbeddings(c)
        self.run_grid = c.grid
        self.register_buffer("run_positions", torch.zeros(1, c.grid * c.grid + 1, c.dim), persistent=False)

    def resample_positions(self) -> None:
        """Bicubic-resize the checkpoint's position grid to the run grid, once (as HF does per call)."""
        pos = self.position_embeddings.detach()
        cls, patch = pos[:, :1], pos[:, 1:]
        src = int(math.isqrt(patch.shape[1]))
        if src != self.run_grid:
            grid = patch.reshape(1, src, src, -1).permute(0, 3, 1, 2).float()
            grid = F.interpolate(grid, size=(self.run_grid, self.run_grid), mode="bicubic", align_corners=False)
            patch = grid.permute(0, 2, 3, 1).reshape(1, self.run_grid**2, -1)
        self.run_positions.copy_(torch.cat([cls, patch], dim=1))

    def forward(self, pixels):
        x = self.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)  # [B, N, dim]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.run_positions


class Dinov2SelfAttention(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(c.dim, c.dim) for _ in range(3))


class Dinov2SelfOutput(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.dense = nn.Linear(c.dim, c.dim)


class Dinov2Attention(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.heads = c.heads
        self.attention = Dinov2SelfAttention(c)
        self.output = Dinov2SelfOutput(c)

    def forward(self, x):
        a = self.attention
        return attention(x, a.query, a.key, a.value, self.output.dense, self.heads)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.lambda1


class Mlp(nn.Module):
    def __init__(self, c: VitConfig, approximate: str):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c.dim, c.mlp_dim), nn.Linear(c.mlp_dim, c.dim)
        self.approximate = approximate

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class Dinov2Layer(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.attention = Dinov2Attention(c)
        self.layer_scale1 = LayerScale(c.dim)
        self.norm2 = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.mlp = Mlp(c, approximate="none")
        self.layer_scale2 = LayerScale(c.dim)

    def forward(self, x):
        x = x + self.layer_scale1(self.attention(self.norm1(x)))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


class Dinov2Encoder(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.layer = nn.ModuleList(Dinov2Layer(c) for _ in range(c.depth))


class Dinov2(nn.Module):
    """pixels [B, 3, S, S] in [0, 1] -> patch tokens [B, grid*grid, dim] (CLS dropped)."""

    def __init__(self, c: VitConfig):
        super().__init__()
        self.config = c
        self.normalize = Normalize(c.mean, c.std)
        self.embeddings = Dinov2Embeddings(c)
        self.encoder = Dinov2Encoder(c)
        self.layernorm = nn.LayerNorm(c.dim, eps=c.norm_eps)

    def after_load(self) -> None:
        self.embeddings.resample_positions()

    def forward(self, pixels):
        x = self.embeddings(self.normalize(pixels))
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)[:, 1:]


# -- SigLIP vision tower (transformers SiglipVisionModel.vision_model) ------------------------


class SiglipEmbeddings(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, c.dim, c.patch_size, stride=c.patch_size)
        self.position_embedding = nn.Embedding(c.grid * c.grid, c.dim)

    def forward(self, pixels):
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [B, N, dim]
        return x + self.position_embedding.weight


class SiglipAttention(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.heads = c.heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(c.dim, c.dim) for _ in range(4))

    def forward(self, x):
        return attention(x, self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.heads)


class SiglipLayer(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.self_attn = SiglipAttention(c)
        self.layer_norm2 = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.mlp = Mlp(c, approximate="tanh")  # gelu_pytorch_tanh

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, c: VitConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipLayer(c) for _ in range(c.depth))


class Siglip(nn.Module):
    """pixels [B, 3, S, S] in [0, 1] -> patch tokens [B, grid*grid, dim] (post-LayerNorm)."""

    def __init__(self, c: VitConfig):
        super().__init__()
        self.config = c
        self.normalize = Normalize(c.mean, c.std)
        self.embeddings = SiglipEmbeddings(c)
        self.encoder = SiglipEncoder(c)
        self.post_layernorm = nn.LayerNorm(c.dim, eps=c.norm_eps)

    def after_load(self) -> None:
        pass

    def forward(self, pixels):
        x = self.embeddings(self.normalize(pixels))
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


VIT_CLASSES = {VitFamily.DINOV2: Dinov2, VitFamily.SIGLIP: Siglip}
# a key every checkpoint of the family has, used to find its prefix inside bigger checkpoints
ANCHOR_KEYS = {
    VitFamily.DINOV2: "embeddings.patch_embeddings.projection.weight",
    VitFamily.SIGLIP: "embeddings.patch_embedding.weight",
}
# checkpoint parts that are not part of the patch-token tower
IGNORED_PREFIXES = {VitFamily.DINOV2: ("pooler.",), VitFamily.SIGLIP: ("head.",)}
