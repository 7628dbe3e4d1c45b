"""Copy-paste composites: training samples whose masks are exact by construction.

An object with a good target (export/sam/targets.py) is cut out of its training photo and
pasted, at a random scale, position, flip and colour, onto another training photo or video
frame. The pasted object is the composite's salient subject (auto mode learns to find it),
its mask is exact wherever something pasted later does not cover it, and with
`HOLD_PROB` a second, smaller object is pasted overlapping the first: a holder and what it
holds. A click on either then targets their union (the whole), which is SqueezeSAM's
"a click on a part selects the whole object" augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from export.sam.data import TargetSet

HOLD_PROB = 0.5  # a second object overlapping the first
SUBJECT_SCALE = (0.35, 0.75)  # the subject's longer side, as a fraction of the canvas's shorter side
HELD_SCALE = (0.3, 0.6)  # the held object's longer side, as a fraction of the subject's
COLOUR_JITTER = 0.15  # per-channel gain in 1 +- this
MIN_SOURCE_AREA, MAX_SOURCE_AREA = 0.02, 0.6  # usable cut-outs, as fractions of their photo


def cutout_sources(targets: TargetSet) -> np.ndarray:
    """Indices of whole-object targets fit to be cut out and pasted (not tiny, not most of the photo)."""
    areas = (targets.masks > 127).reshape(len(targets.masks), -1).sum(1)
    content = targets.content[targets.owner].prod(1)
    is_whole = targets.whole == np.arange(len(targets.whole))
    return np.nonzero(is_whole & (areas >= MIN_SOURCE_AREA * content) & (areas <= MAX_SOURCE_AREA * content))[0]


@dataclass
class Composite:
    image: np.ndarray  # uint8 [S, S, 3], letterboxed like every training image
    content: tuple[int, int]
    parts: list[np.ndarray]  # float [S, S] visible alpha of each pasted object, subject first
    whole: np.ndarray  # float [S, S]: the union, the salient subject and the whole for every part


def _cut(targets: TargetSet, index: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (rgb float [h, w, 3], alpha float [h, w]) cropped to the target's box."""
    alpha = targets.masks[index].astype(np.float32) / 255
    ys, xs = np.nonzero(alpha > 0.5)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb = targets.images[targets.owner[index]][y0:y1, x0:x1].astype(np.float32)
    return rgb, np.where(alpha[y0:y1, x0:x1] > 0.5, alpha[y0:y1, x0:x1], 0)


def _resize(rgb: np.ndarray, alpha: np.ndarray, long_side: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = alpha.shape
    scale = long_side / max(h, w)
    size = (max(2, round(h * scale)), max(2, round(w * scale)))
    t = torch.from_numpy(np.concatenate([rgb, alpha[..., None]], -1)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    return t[..., :3], np.clip(t[..., 3], 0, 1)


def _paste(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, top: int, left: int) -> np.ndarray:
    """Alpha-blend in place (clipped to the canvas); returns the pasted alpha at canvas size."""
    full = np.zeros(canvas.shape[:2], np.float32)
    h, w = alpha.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if y1 <= y0 or x1 <= x0:
        return full
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left]
    canvas[y0:y1, x0:x1] = (
        canvas[y0:y1, x0:x1] * (1 - a[..., None]) + rgb[y0 - top : y1 - top, x0 - left : x1 - left] * a[..., None]
    )
    full[y0:y1, x0:x1] = a
    return full


def _jittered(rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    gain = 1 + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
    return np.clip(rgb * gain, 0, 255), alpha


def make_composite(targets: TargetSet, sources: np.ndarray, rng: np.random.Generator) -> Composite:
    """One composite: a random training image as background, a subject pasted near its centre,
    sometimes a held object overlapping the subject. Sources come from other images than the
    background, so a pasted object never lands on its own photo."""
    background = int(rng.integers(len(targets.images)))
    h, w = (int(v) for v in targets.content[background])
    canvas = targets.images[background].astype(np.float32).copy()
    choices = sources[targets.owner[sources] != background]
    if not len(choices):
        choices = sources
    subject = int(choices[rng.integers(len(choices))])
    rgb, alpha = _jittered(*_cut(targets, subject), rng)
    rgb, alpha = _resize(rgb, alpha, rng.uniform(*SUBJECT_SCALE) * min(h, w))
    sh, sw = alpha.shape
    top = int(np.clip((h - sh) / 2 + rng.uniform(-0.2, 0.2) * h, 0, max(0, h - sh)))
    left = int(np.clip((w - sw) / 2 + rng.uniform(-0.2, 0.2) * w, 0, max(0, w - sw)))
    parts = [_paste(canvas, rgb, alpha, top, left)]
    if rng.random() < HOLD_PROB:
        held = int(choices[rng.integers(len(choices))])
        hrgb, halpha = _jittered(*_cut(targets, held), rng)
        hrgb, halpha = _resize(hrgb, halpha, rng.uniform(*HELD_SCALE) * max(sh, sw))
        ys, xs = np.nonzero(parts[0] > 0.5)
        if len(ys):  # the held object's centre sits on the subject
            k = rng.integers(len(ys))
            held_alpha = _paste(
                canvas, hrgb, halpha, int(ys[k] - halpha.shape[0] / 2), int(xs[k] - halpha.shape[1] / 2)
            )
            parts[0] = parts[0] * (1 - held_alpha)
            parts.append(held_alpha)
    canvas[h:, :] = 0
    canvas[:, w:] = 0
    for p in parts:
        p[h:, :] = 0
        p[:, w:] = 0
    whole = np.clip(np.sum(parts, 0), 0, 1)
    return Composite(canvas.round().astype(np.uint8), (h, w), parts, whole)


def composites_sheet(targets: TargetSet, path, count: int = 12, seed: int = 0) -> None:
    """`count` composites, each shown with its parts' edges (yellow: the subject, cyan: what it
    holds) and the whole (the auto-mode target) tinted: what training sees."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    sources = cutout_sources(targets)
    cols = 6
    fig, axes = plt.subplots(-(-count // cols), cols, figsize=(cols * 2.2, -(-count // cols) * 2.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax in axes.flat[:count]:
        c = make_composite(targets, sources, rng)
        shown = c.image.astype(float) / 255
        shown = np.where(c.whole[..., None] > 0.5, 0.7 * shown + 0.3 * np.array([1.0, 0.3, 0.3]), shown)
        for part, colour in zip(c.parts, ((1, 1, 0), (0, 1, 1))):
            shown[find_boundaries(part > 0.5)] = colour
        ax.imshow(shown)
        ax.set_title("subject + held" if len(c.parts) == 2 else "subject", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    from export.sam.config import TrainConfig
    from export.sam.train import load_targets

    out = sys.argv[1] if len(sys.argv) > 1 else "artifacts/sam_composites.png"
    composites_sheet(load_targets(TrainConfig(), 256), out)
    print(f"wrote {out}")
