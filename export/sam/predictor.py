"""The segmenter behind `handheld segment` and `handheld eval sam`: an artifact folder (any
backend, through runtime/segment.py) or a SqueezeSAM checkpoint run eagerly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.outputs import atomic_file
from runtime.clicks import Click
from runtime.errors import HandheldError
from runtime.images import load_image
from runtime.segment import Segmenter, overlay


def eager_segmenter(path: Path | None = None) -> Segmenter:
    """A SqueezeSAM checkpoint (default: the shipped one) run by PyTorch."""
    from export.sam.model import load_checkpoint, shipped_checkpoint

    return Segmenter.from_model(load_checkpoint(path or shipped_checkpoint()))


def open_segmenter(source: Path, variant: str = "int8") -> Segmenter:
    """An artifact folder (any backend) or a SqueezeSAM checkpoint file (eager)."""
    source = Path(source)
    if source.is_file():
        return eager_segmenter(source)
    return Segmenter.from_artifact(source, variant)


def mask_path(out: Path) -> Path:
    """The binary mask PNG written beside the overlay."""
    return Path(out).with_name(Path(out).stem + "_mask.png")


def segment_to_png(source: Path, image: Path, clicks: list[Click], out: Path, variant: str = "int8") -> dict:
    """Segment `image` with `clicks` (none: auto mode); write an overlay PNG and the mask PNG beside it."""
    from PIL import Image

    rgb = load_image(Path(image))
    h, w = rgb.shape[:2]
    outside = [c for c in clicks if not (0 <= c.x <= w and 0 <= c.y <= h)]
    if outside:
        c = outside[0]
        raise HandheldError(
            f"click ({c.x - 0.5:.0f}, {c.y - 0.5:.0f}) is outside the {w}x{h} image",
            f"click inside it: x in 0..{w - 1}, y in 0..{h - 1}",
        )
    segmenter = open_segmenter(source, variant)
    segmenter.set_image(rgb)
    result = segmenter.predict(clicks) if clicks else segmenter.auto()
    out = Path(out)
    with atomic_file(out) as tmp_overlay, atomic_file(mask_path(out)) as tmp_mask:
        Image.fromarray(overlay(rgb, result)).save(tmp_overlay, format="PNG")
        Image.fromarray(result.mask.astype(np.uint8) * 255).save(tmp_mask, format="PNG")
    return {
        "overlay": str(out),
        "mask": str(mask_path(out)),
        "model": segmenter.name,
        "mask_fraction": round(float(result.mask.mean()), 4),
        "clicks": [(round(c.x, 1), round(c.y, 1), "+" if c.positive else "-") for c in result.clicks],
    }
