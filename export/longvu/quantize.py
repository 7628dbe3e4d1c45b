"""Static int8 for the vision pieces: PT2E with ExecuTorch's XNNPACKQuantizer.

Per-channel symmetric int8 weights, per-tensor int8 activations calibrated on real photos from
scikit-image (not the sample videos, which parity uses). The converted module computes the
quantize/dequantize math eagerly and is the reference the lowered program is checked against.
"""

from __future__ import annotations

import torch
from torch import nn

from export.metrics import sqnr_db
from runtime.video import resize_frames

CALIBRATION_IMAGES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "cat",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
)


def calibration_pixels(size: int) -> torch.Tensor:
    """[8, 3, size, size] scikit-image photos, squashed to a square like the video frames."""
    import skimage.data

    return torch.cat([resize_frames(getattr(skimage.data, name)()[None, ..., :3], size) for name in CALIBRATION_IMAGES])


def quantize_int8(module: nn.Module, calibration: list[tuple[torch.Tensor, ...]]) -> tuple[nn.Module, dict]:
    """PT2E static int8 of `module` calibrated on `calibration` (each item one call's inputs).

    Returns the converted module and its output SQNR against the float module on that data.
    """
    from export.backends.executorch import quantize_pt2e

    converted = quantize_pt2e(module, calibration[0], calibration)
    with torch.no_grad():
        ref = [_flat(module(*a)) for a in calibration]
        got = [_flat(converted(*a)) for a in calibration]
    return converted, {
        "calibration_sqnr_db": sqnr_db(torch.cat(ref), torch.cat(got)),
        "calibration_items": len(calibration),
    }


def _flat(out) -> torch.Tensor:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return torch.cat([o.flatten() for o in outs])
