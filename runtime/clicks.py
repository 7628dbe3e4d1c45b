"""Click maps: the early-fusion encoding shared by training, the predictor and the phone apps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from runtime.errors import HandheldError


@dataclass(frozen=True)
class ClickEncoding:
    """How clicks become input channels (the phone apps must render them the same way).

    Each click is a Gaussian bump exp(-d^2 / (2 sigma^2)) centred on the click, d in model-input
    pixels (after resize + pad); positive and negative clicks go to separate channels, combined
    with max, so the maps stay in [0, 1] for any number of clicks.
    """

    sigma_px: float = 5.0
    max_clicks: int = 16  # the predictor refuses more than this (the apps use a fixed-size buffer)

    def __post_init__(self):
        if not 0.5 <= self.sigma_px <= 64:
            raise HandheldError(f"sigma_px={self.sigma_px} is out of range", "use 0.5..64 pixels")
        if not 1 <= self.max_clicks <= 64:
            raise HandheldError(f"max_clicks={self.max_clicks} is out of range", "use 1..64")


@dataclass(frozen=True)
class Click:
    x: float  # pixels in the image it was made on (column)
    y: float  # (row)
    positive: bool = True


def render_click_maps(
    clicks_xy: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor, size: int, encoding: ClickEncoding
) -> torch.Tensor:
    """Gaussian click maps.

    clicks_xy: [B, N, 2] (x, y) in model-input pixels; positive, valid: [B, N] bool.
    Returns [B, 2, size, size]: channel 0 = max over positive clicks, channel 1 = negative.
    """
    coords = torch.arange(size, dtype=torch.float32, device=clicks_xy.device) + 0.5  # pixel centres
    dx = coords.view(1, 1, 1, size) - clicks_xy[..., 0, None, None]  # [B, N, 1, S]
    dy = coords.view(1, 1, size, 1) - clicks_xy[..., 1, None, None]  # [B, N, S, 1]
    bumps = torch.exp(-(dx * dx + dy * dy) / (2 * encoding.sigma_px**2))  # [B, N, S, S]
    # a zero map is appended so that no clicks (N = 0) gives all-zero maps
    zero = torch.zeros_like(bumps[:, :1])
    pos = torch.cat([bumps * (valid & positive)[..., None, None], zero], dim=1).amax(dim=1)
    neg = torch.cat([bumps * (valid & ~positive)[..., None, None], zero], dim=1).amax(dim=1)
    return torch.stack([pos, neg], dim=1)


def interior_point(region: np.ndarray, rng: np.random.Generator | None = None) -> tuple[float, float] | None:
    """A click inside `region` (bool [H, W]) away from its border, as (x, y) pixel centres.

    Deterministic (the deepest point) without `rng`; with it, a random point at least half as
    deep as the deepest, as SAM-style click simulation does. None for an empty region.
    """
    if not region.any():
        return None
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    if rng is None:
        y, x = np.unravel_index(np.argmax(depth), depth.shape)
    else:
        ys, xs = np.nonzero(depth >= 0.5 * depth.max())
        k = rng.integers(len(ys))
        y, x = ys[k], xs[k]
    return float(x) + 0.5, float(y) + 0.5


def next_click(pred: np.ndarray, target: np.ndarray, rng: np.random.Generator | None = None) -> Click | None:
    """The corrective click: inside the largest error region, positive if the model missed
    object pixels there (false negatives), negative if it added background (false positives)."""
    best = None
    for positive, error in ((True, target & ~pred), (False, pred & ~target)):
        labels, n = ndimage.label(error)
        if n == 0:
            continue
        sizes = ndimage.sum(error, labels, index=np.arange(1, n + 1))
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (sizes[k], positive, labels == k + 1)
    if best is None:
        return None
    x, y = interior_point(best[2], rng)
    return Click(x, y, best[1])


def clicks_to_tensors(clicks: list[list[Click]], max_clicks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample click lists -> padded (xy [B, N, 2], positive [B, N], valid [B, N])."""
    n = max(1, max_clicks)
    xy = torch.zeros(len(clicks), n, 2)
    positive = torch.zeros(len(clicks), n, dtype=torch.bool)
    valid = torch.zeros(len(clicks), n, dtype=torch.bool)
    for b, sample in enumerate(clicks):
        for i, c in enumerate(sample[:n]):
            xy[b, i] = torch.tensor([c.x, c.y])
            positive[b, i], valid[b, i] = c.positive, True
    return xy, positive, valid
