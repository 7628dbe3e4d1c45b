"""SqueezeSAM-style segmenter: a fully convolutional early-fusion UNet.

Clicks enter as extra input channels beside RGB (early fusion, arXiv 2312.06736), so each
click re-runs the whole network; there is no separate image encoder to cache.
Only convolutions, BatchNorm (folded at export), ReLU, bilinear 2x upsampling and concat
(XNNPACK delegates bilinear resize but not nearest, which would split the graph):
every op has an int8 XNNPACK kernel, a QDQ ONNX form and a CoreML op.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from export.sam.config import SqueezeSamConfig
from runtime.errors import HandheldError

CHECKPOINT_FORMAT = "handheld-squeezesam-v1"


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Down(nn.Sequential):
    """Halve the resolution, then `blocks` more 3x3 convs."""

    def __init__(self, cin: int, cout: int, blocks: int):
        super().__init__(conv_bn_relu(cin, cout, stride=2), *[conv_bn_relu(cout, cout) for _ in range(blocks)])


class Up(nn.Module):
    """Double the resolution, concat the skip, fuse with 3x3 convs."""

    def __init__(self, cin: int, cskip: int, cout: int, blocks: int):
        super().__init__()
        self.fuse = nn.Sequential(
            conv_bn_relu(cin + cskip, cout), *[conv_bn_relu(cout, cout) for _ in range(blocks - 1)]
        )

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, skip], dim=1))


class SqueezeSam(nn.Module):
    """forward(image [B,3,S,S] normalized, clicks [B,C,S,S] in [0,1]) -> logits [B,1,S,S].

    C = 2 (positive, negative) or 3 (plus the previous mask as probabilities).
    """

    def __init__(self, config: SqueezeSamConfig):
        super().__init__()
        self.config = config
        w = config.widths
        blocks = max(config.blocks_per_stage, 1)
        self.down = nn.ModuleList(
            Down(cin, cout, config.blocks_per_stage) for cin, cout in zip((config.in_channels,) + w[:-1], w)
        )
        # decoder: from the deepest stage back to stride 2, then to full resolution
        self.up = nn.ModuleList(
            Up(w[i + 1] if i == len(w) - 2 else w[i + 1], w[i], w[i], blocks) for i in reversed(range(len(w) - 1))
        )
        self.head = nn.Sequential(conv_bn_relu(w[0] + config.in_channels, w[0]), nn.Conv2d(w[0], 1, 1))

    def forward(self, image: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        x0 = torch.cat([image, clicks], dim=1)  # [B, in_channels, S, S]
        skips = []
        x = x0
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        for up, skip in zip(self.up, reversed(skips[:-1])):
            x = up(x, skip)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(torch.cat([x, x0], dim=1))


def build(config: SqueezeSamConfig) -> SqueezeSam:
    return SqueezeSam(config)


def save_checkpoint(model: SqueezeSam, path: Path, half: bool = True, **extra) -> None:
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(
        {"format": CHECKPOINT_FORMAT, "config": model.config.to_dict(), "state_dict": state, **extra}, Path(path)
    )


def load_checkpoint(path: Path) -> SqueezeSam:
    """Load a Handheld SqueezeSAM checkpoint (strict, weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise HandheldError(f"checkpoint {path} does not exist", "pass a file written by `handheld train sam`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling failures come in many types
        raise HandheldError(
            f"{path} is not a loadable PyTorch checkpoint ({type(err).__name__})",
            "pass a file written by `handheld train sam`",
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise HandheldError(
            f"{path} is not a SqueezeSAM checkpoint (no '{CHECKPOINT_FORMAT}' header; a SAM/LiteMedSAM state dict?)",
            "pass a checkpoint written by `handheld train sam` (SAM-family weights go to --teacher-checkpoint)",
        )
    model = build(SqueezeSamConfig.from_dict(blob["config"]))
    own = model.state_dict()
    state = blob["state_dict"]
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if bad:
        raise HandheldError(
            f"{path}: weights do not match the architecture in its own config ({len(bad)} tensors, e.g. {bad[:2]})",
            "the file is damaged; retrain or re-download it",
        )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model.eval()


def shipped_checkpoint() -> Path:
    return Path(__file__).parent / "weights" / "squeezesam-small.pt"
