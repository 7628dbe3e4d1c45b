"""LongVU configuration: video sampling, the two vision encoders, compression and export.

Every threshold and budget of the algorithm (arXiv 2410.17434) is a field here; defaults live
only on these dataclasses and the named presets map one-to-one onto them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from export.config import (
    Backend,
    LLMExportConfig,
    LLMQuantConfig,
    Rotation,
    llm_config_from_dict,
    parse_enum,
    to_jsonable,
)
from runtime.compress import CompressConfig
from runtime.errors import HandheldError
from runtime.video import VideoConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2's preprocessing
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)  # SigLIP's preprocessing
SIGLIP_STD = (0.5, 0.5, 0.5)


class VitFamily(str, Enum):
    DINOV2 = "dinov2"
    SIGLIP = "siglip"


@dataclass(frozen=True)
class VitConfig:
    """A ViT in HF's DINOv2 or SigLIP-vision layout; `image_size` is the size it runs at."""

    family: VitFamily
    image_size: int
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    norm_eps: float = 1e-6
    # DINOv2 checkpoints store position embeddings for this grid (518 px / 14 = 37) and are
    # interpolated to image_size // patch_size at load time; SigLIP's grid is fixed.
    pos_grid: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "family", parse_enum(VitFamily, self.family, "ViT family"))
        if self.image_size < self.patch_size:
            raise HandheldError(
                f"image_size {self.image_size} is smaller than patch {self.patch_size}", "use a larger image size"
            )
        if self.dim % self.heads:
            raise HandheldError(f"dim {self.dim} is not divisible by {self.heads} heads", "fix the encoder config")

    @property
    def grid(self) -> int:  # the patch conv drops a remainder (SigLIP so400m: 384 // 14 = 27)
        return self.image_size // self.patch_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return IMAGENET_MEAN if self.family is VitFamily.DINOV2 else SIGLIP_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return IMAGENET_STD if self.family is VitFamily.DINOV2 else SIGLIP_STD


DINO_PRESETS: dict[str, VitConfig] = {
    # facebook/dinov2-small (ViT-S/14) run at 224 px: 16 x 16 patches
    "dinov2-small": VitConfig(VitFamily.DINOV2, 224, 14, 384, 12, 6, 1536, pos_grid=37),
    "dinov2-base": VitConfig(VitFamily.DINOV2, 224, 14, 768, 12, 12, 3072, pos_grid=37),
    "tiny-test": VitConfig(VitFamily.DINOV2, 56, 14, 24, 2, 3, 40, pos_grid=5),
}
SIGLIP_PRESETS: dict[str, VitConfig] = {
    # google/siglip-base-patch16-224: 14 x 14 = 196 tokens, the small on-device default
    "siglip-base-patch16-224": VitConfig(VitFamily.SIGLIP, 224, 16, 768, 12, 12, 3072),
    # google/siglip-so400m-patch14-384, LongVU's encoder: 27 x 27 = 729 tokens
    "siglip-so400m-patch14-384": VitConfig(VitFamily.SIGLIP, 384, 14, 1152, 27, 16, 4304),
    "tiny-test": VitConfig(VitFamily.SIGLIP, 64, 8, 36, 2, 3, 52),
}


@dataclass(frozen=True)
class LongVUConfig:
    dino: VitConfig = DINO_PRESETS["dinov2-small"]
    siglip: VitConfig = SIGLIP_PRESETS["siglip-base-patch16-224"]
    video: VideoConfig = field(default_factory=VideoConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    # the text decoder (checkpoint, KV-cache length = the whole context, 8da4w, rotations);
    # None checkpoint = the offline SmolLM2-135M-Instruct. Its `backend` is unused here.
    llm: LLMExportConfig = field(default_factory=lambda: LLMExportConfig(max_seq_len=1024))
    max_new_tokens: int = 48  # reserved out of the context for the answer
    dino_checkpoint: str | None = None  # HF DINOv2 folder / .safetensors / LongVU checkpoint; None = seeded random
    siglip_checkpoint: str | None = None  # HF SigLIP folder / .safetensors / LongVU checkpoint; None = seeded random
    projector_checkpoint: str | None = None  # file holding mm_projector.* (LongVU's checkpoint); None = seeded random
    seed: int = 0  # for the random vision weights
    backend: Backend = Backend.EXECUTORCH
    # static int8 (PT2E, XNNPACKQuantizer) for DINO, SigLIP and projector. Off by default: on the
    # sample videos int8 features drift ~20 dB SQNR (XNNPACK vs its own PT2E reference too), and
    # dedup/STC decisions within that of a threshold flip, so selection is only exact in fp32.
    quantize_vision: bool = False

    def __post_init__(self):
        object.__setattr__(self, "backend", parse_enum(Backend, self.backend, "backend"))
        if self.dino.family is not VitFamily.DINOV2 or self.siglip.family is not VitFamily.SIGLIP:
            raise HandheldError(
                "dino must be a DINOv2 config and siglip a SigLIP config", "use DINO_PRESETS / SIGLIP_PRESETS"
            )
        if self.backend is Backend.ONNX and self.quantize_vision:
            raise HandheldError(
                "the onnx LongVU export keeps its vision methods fp32 (PT2E int8 is XNNPACK's)",
                "use --preset longvu-smollm2-onnx (the CLI's default for onnx)",
            )
        if self.backend is Backend.COREML and self.quantize_vision:
            raise HandheldError(
                "the coreml LongVU export keeps its vision methods fp32 (PT2E int8 is XNNPACK's)",
                "use --preset longvu-smollm2-coreml (the CLI's default for coreml)",
            )
        if not 1 <= self.max_new_tokens < self.context_len // 2:
            raise HandheldError(f"max_new_tokens={self.max_new_tokens}", f"use 1..{self.context_len // 2 - 1}")

    @property
    def context_len(self) -> int:
        return self.llm.max_seq_len

    @property
    def dino_size(self) -> int:
        return self.dino.image_size

    @property
    def siglip_size(self) -> int:
        return self.siglip.image_size

    @property
    def random_vision(self) -> bool:
        """True when any vision weight is seeded-random: answers are then not meaningful."""
        return None in (self.dino_checkpoint, self.siglip_checkpoint, self.projector_checkpoint)

    def to_dict(self) -> dict:
        return to_jsonable(self)


def config_from_dict(d: dict) -> LongVUConfig:
    """Inverse of `LongVUConfig.to_dict` (reads an artifact's manifest)."""
    return LongVUConfig(
        dino=VitConfig(**d["dino"]),
        siglip=VitConfig(**d["siglip"]),
        video=VideoConfig(**d["video"]),
        compress=CompressConfig(**d["compress"]),
        llm=llm_config_from_dict(d["llm"]),
        **{k: v for k, v in d.items() if k not in ("dino", "siglip", "video", "compress", "llm")},
    )


FP32_LLM = LLMQuantConfig(weight_bits=16, dynamic_activations=False, embedding_bits=0, output_bits=0)

PRESETS: dict[str, LongVUConfig] = {
    "longvu-smollm2": LongVUConfig(),
    # int8 vision: ~2-3x smaller/faster encoders, selection may differ near thresholds (see parity)
    "longvu-smollm2-int8vision": LongVUConfig(quantize_vision=True),
    # tiny random encoders on the real SmolLM2 decoder: the whole path in seconds (QuaRot: its
    # rotations are generated, so any decoder works, the tests' tiny random one included)
    "longvu-tiny": LongVUConfig(
        dino=DINO_PRESETS["tiny-test"],
        siglip=SIGLIP_PRESETS["tiny-test"],
        video=VideoConfig(decode_size=64),
        llm=LLMExportConfig(max_seq_len=1024, rotation=Rotation.QUAROT),
    ),
    # every method a CoreML package: fp32 vision, int4/int8 text decoder (CoreML's quantizer)
    "longvu-smollm2-coreml": LongVUConfig(backend=Backend.COREML),
    # every method an ONNX file: fp32 vision, MatMulNBits 4-bit (GPTQ) text decoder, int8 table
    "longvu-smollm2-onnx": LongVUConfig(backend=Backend.ONNX),
    # unquantized everything: the eager reference the artifacts' quantization is measured against
    "longvu-smollm2-fp32": LongVUConfig(llm=LLMExportConfig(max_seq_len=1024, quant=FP32_LLM)),
}
