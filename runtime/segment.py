"""The segmenter predictor: an image and clicks (or none: auto mode) in, a mask out.

It runs the eager SqueezeSAM or any exported artifact with the same letterbox, normalization
and click encoding (read from the artifact's manifest, as the phone apps do).

Auto mode: the network runs once with empty click maps (it was trained to return the salient
whole object then), a click is placed at the deepest point of that mask, and the network runs
again with it; the user continues from that click. Measured on held-out photos (README), the
proposed click gives a better mask than the empty-click pass alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runtime.clicks import Click, ClickEncoding, clicks_to_tensors, interior_point, render_click_maps
from runtime.errors import HandheldError
from runtime.images import Letterbox, load_image, to_rgb
from runtime.manifest import load_manifest


@dataclass(frozen=True)
class InputSpec:
    """What a segmenter takes, as its manifest's `model` entry says (and the phone apps read):
    the square input size, the pixel normalization, the click encoding, and whether the
    previous mask is fed back as a click channel."""

    image_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    clicks: ClickEncoding
    prev_mask_channel: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        """From a manifest's `model` entry (a SqueezeSAM config; its architecture keys are not needed here)."""
        return cls(
            int(d["image_size"]),
            tuple(d["pixel_mean"]),
            tuple(d["pixel_std"]),
            ClickEncoding(**d.get("clicks", {})),
            bool(d.get("prev_mask_channel", False)),
        )


ModelForward = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image [1,3,S,S], clicks [1,C,S,S]) -> logits [1,1,S,S]


@dataclass
class Segmentation:
    mask: np.ndarray  # bool [H, W] in image pixels
    logits: np.ndarray  # float32 [S, S] at model resolution (letterboxed)
    clicks: list[Click] = field(default_factory=list)


class Segmenter:
    def __init__(self, forward: ModelForward, config: InputSpec, name: str = "eager"):
        self.forward = forward
        self.config = config
        self.name = name
        self._image: np.ndarray | None = None
        self._box: Letterbox | None = None
        self._prev: np.ndarray | None = None

    @classmethod
    def from_model(cls, model) -> Segmenter:
        """An eager SqueezeSam module (on the CPU, eval mode)."""

        def forward(image, clicks):
            with torch.no_grad():
                return model(torch.from_numpy(image), torch.from_numpy(clicks)).numpy()

        return cls(forward, model.config.input_spec, "eager fp32")

    @classmethod
    def from_artifact(cls, folder: Path, variant: str = "int8") -> Segmenter:
        from runtime.sam_backends import load_forward

        manifest = load_manifest(folder)
        if manifest.get("kind") != "sam":
            raise HandheldError(
                f"{folder} holds a {manifest.get('kind')!r} artifact, not a segmenter",
                "pass a folder written by `handheld export sam`",
            )
        variants = manifest.get("variants")
        if not isinstance(variants, dict) or not all(isinstance(v, dict) and "file" in v for v in variants.values()):
            raise HandheldError(
                f"{folder}/manifest.json lists no model variants", "re-export it with `handheld export sam`"
            )
        if variant not in variants:
            raise HandheldError(f"{folder} has no {variant!r} variant", f"use one of: {', '.join(variants)}")
        run = load_forward(manifest["backend"], Path(folder) / variants[variant]["file"])
        return cls(
            lambda image, clicks: run(image, clicks)[0],
            InputSpec.from_dict(manifest["model"]),
            f"{manifest['backend']} {variant}",
        )

    def set_image(self, image: np.ndarray | str | Path) -> None:
        """Letterbox + normalize once per image; grayscale/RGBA are converted to RGB."""
        rgb = load_image(Path(image)) if isinstance(image, (str, Path)) else to_rgb(image)
        cfg = self.config
        self._box = Letterbox(rgb.shape[0], rgb.shape[1], cfg.image_size)
        self._image = self._box.normalized(rgb, cfg.pixel_mean, cfg.pixel_std).numpy().astype(np.float32)
        self._prev = None

    def click_maps(self, clicks: list[Click]) -> np.ndarray:
        """Clicks in image pixels -> [1, C, S, S] float32 maps (manifest's click encoding)."""
        box, cfg = self._require_image(), self.config
        if len(clicks) > cfg.clicks.max_clicks:
            raise HandheldError(
                f"{len(clicks)} clicks; this model takes at most {cfg.clicks.max_clicks}", "drop some clicks"
            )
        for c in clicks:
            if not (0 <= c.x < box.width and 0 <= c.y < box.height):
                raise HandheldError(
                    f"click ({c.x:g}, {c.y:g}) is outside the {box.width}x{box.height} image",
                    f"use 0 <= x < {box.width} and 0 <= y < {box.height} (pixels from the top-left corner)",
                )
        model_clicks = [Click(*box.to_model(c.x, c.y), c.positive) for c in clicks]
        xy, pos, valid = clicks_to_tensors([model_clicks], cfg.clicks.max_clicks)
        maps = render_click_maps(xy, pos, valid, cfg.image_size, cfg.clicks)
        if cfg.prev_mask_channel:
            prev = (
                self._prev
                if self._prev is not None and clicks
                else np.zeros((1, 1, cfg.image_size, cfg.image_size), np.float32)
            )
            maps = torch.cat([maps, torch.from_numpy(prev)], dim=1)
        return maps.numpy().astype(np.float32)

    def predict(self, clicks: list[Click]) -> Segmentation:
        box = self._require_image()
        logits = np.asarray(self.forward(self._image, self.click_maps(clicks)), dtype=np.float32).reshape(
            self.config.image_size, self.config.image_size
        )
        self._prev = (1 / (1 + np.exp(-logits)))[None, None].astype(np.float32)
        mask = box.to_image(torch.from_numpy(logits)).numpy() > 0
        return Segmentation(mask, logits, list(clicks))

    def auto(self) -> Segmentation:
        """No clicks: salient object from empty click maps, then one click at its deepest point."""
        box = self._require_image()
        first = self.predict([])
        h, w = box.content
        point = interior_point(first.logits[:h, :w] > 0)
        if point is None:
            return first
        x, y = point[0] / box.scale, point[1] / box.scale
        return self.predict([Click(min(x, box.width - 0.5), min(y, box.height - 0.5), True)])

    def _require_image(self) -> Letterbox:
        if self._box is None:
            raise HandheldError("no image set", "call set_image(...) first")
        return self._box


def overlay(rgb: np.ndarray, seg: Segmentation, color=(30, 144, 255)) -> np.ndarray:
    """uint8 [H, W, 3]: the mask tinted over the image, its outline and the clicks drawn."""
    from scipy import ndimage

    out = rgb.astype(np.float32)
    m = seg.mask
    out[m] = 0.45 * out[m] + 0.55 * np.array(color, np.float32)
    edge = m & ~ndimage.binary_erosion(m, iterations=max(1, min(rgb.shape[:2]) // 200))
    out[edge] = 255
    r = max(3, min(rgb.shape[:2]) // 80)
    yy, xx = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
    for c in seg.clicks:
        d2 = (xx + 0.5 - c.x) ** 2 + (yy + 0.5 - c.y) ** 2
        out[d2 <= (r + 2) ** 2] = 255
        out[d2 <= r**2] = (0, 200, 0) if c.positive else (220, 0, 0)
    return out.clip(0, 255).astype(np.uint8)
