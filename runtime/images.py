"""Images in, model input out: decoding, RGB conversion and the letterbox every segmenter input
goes through (the phone apps do the same: export/bundle/contract.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from runtime.errors import HandheldError


def to_rgb(array: np.ndarray, what: str = "image") -> np.ndarray:
    """Any 2-D gray, gray+alpha, RGB or RGBA array -> uint8 [H, W, 3] RGB (alpha is dropped)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (1, 2):
        a = a[..., 0]
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise HandheldError(
            f"{what} has shape {a.shape}, not a gray, RGB or RGBA picture",
            "pass an image file (PNG/JPEG) or an [H, W, 3] array",
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise HandheldError(
            f"{what} is empty ({a.shape[0]}x{a.shape[1]} pixels)", "pass an image with at least one pixel"
        )
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        a = a / 65535.0 * 255 if a.max() > 255 else (a * 255 if a.max() <= 1.0 else a)
        a = np.clip(a, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)


MAX_IMAGE_PIXELS = 64 * 10**6  # a 20000 x 20000 photo would take 1.2 GB decoded


def load_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise HandheldError(f"image {path} does not exist", "check the path")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise HandheldError(
                    f"image {path} is {im.width}x{im.height} pixels, more than Handheld decodes ({MAX_IMAGE_PIXELS // 10**6} MP)",
                    "downscale it first (the segmenter sees 256 px anyway), e.g. to 4096 px on the long side",
                )
            im.load()
            if im.width == 0 or im.height == 0:
                raise HandheldError(f"image {path} is empty (0 pixels)", "pass an image with at least one pixel")
            return to_rgb(np.asarray(im.convert("RGBA" if "A" in im.getbands() else "RGB")), str(path))
    except Image.DecompressionBombError:
        raise HandheldError(
            f"image {path} has more pixels than Handheld decodes ({MAX_IMAGE_PIXELS // 10**6} MP)",
            "downscale it first (the segmenter sees 256 px anyway), e.g. to 4096 px on the long side",
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise HandheldError(f"cannot read image {path}: {err}", "pass a PNG or JPEG file") from None


@dataclass(frozen=True)
class Letterbox:
    """Resize the longest side to `size`; pad bottom/right to a square (zeros after normalization,
    export/bundle/contract.py: the phone apps do the same)."""

    height: int
    width: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.height, self.width)

    @property
    def content(self) -> tuple[int, int]:  # (rows, cols) of real pixels inside the square
        return max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale))

    def apply(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, 3] -> float [1, 3, size, size] in [0, 1], padded with 0 (the teacher's input)."""
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        h, w = self.content
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return F.pad(x, (0, self.size - w, 0, self.size - h))

    def normalized(self, rgb: np.ndarray, mean, std) -> torch.Tensor:
        """uint8 [H, W, 3] -> [1, 3, size, size]: (x - mean) / std on the content, 0 on the padding."""
        x = (self.apply(rgb) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        return x * self.content_mask()

    def content_mask(self) -> torch.Tensor:
        h, w = self.content
        m = torch.zeros(1, 1, self.size, self.size)
        m[..., :h, :w] = 1
        return m

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale, y * self.scale

    def to_image(self, square: torch.Tensor) -> torch.Tensor:
        """[..., size, size] model-resolution map -> [..., H, W] in image pixels (bilinear)."""
        h, w = self.content
        crop = square[..., :h, :w]
        lead = crop.shape[:-2]
        out = F.interpolate(
            crop.reshape(1, -1, h, w).float(), size=(self.height, self.width), mode="bilinear", align_corners=False
        )
        return out.reshape(*lead, self.height, self.width)
