"""The eager LongVU pipeline: five fixed-shape pieces as torch modules.

    dino:    pixels [1, 3, Sd, Sd] in [0, 1]  -> DINOv2 patch tokens [1, Nd, Dd]
    siglip:  pixels [1, 3, Ss, Ss] in [0, 1]  -> SigLIP patch tokens [1, g*g, Dv]
    project: SigLIP tokens [1, g*g, Dv]       -> hi [1, 144, dim], lo [1, 64, dim]
    embed:   tokens [1, L]                    -> [1, L, dim]
    decode:  embeds [1, S, dim], input_pos [1] -> logits [1, vocab]

The data-dependent selection between them runs on the host (`runtime.video_qa`), fed either by
these modules or by the exported program's methods of the same names, so eager and exported
selections are compared exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from export.llm.checkpoint import Checkpoint
from export.llm.pipeline import prepare_model
from export.longvu.config import LongVUConfig, VitFamily
from export.longvu.decoder import EmbedsDecoder, TokenEmbedding
from export.longvu.weights import load_projector, load_vit

NOT_MEANINGFUL = (
    "NOTE: the vision encoders and projector are seeded random weights (no DINOv2/SigLIP/LongVU "
    "weights install offline), so this answer is NOT meaningful; pass --dino/--siglip/--projector "
    "checkpoints for real answers."
)


@dataclass
class LongVUModel:
    cfg: LongVUConfig  # with the encoder shapes actually loaded
    dino: nn.Module
    siglip: nn.Module
    projector: nn.Module
    embed: TokenEmbedding
    decoder: EmbedsDecoder
    llm: nn.Module  # the prepared (rotated/quantized) decoder without a cache
    checkpoint: Checkpoint
    quant_report: dict
    float_vision: tuple[nn.Module, nn.Module, nn.Module] | None = None  # (dino, siglip, projector) before int8
    llm_float: nn.Module | None = (
        None  # ONNX/CoreML: the rotated fp32 decoder their exporters compress (`llm` simulates that)
    )


def build_model(cfg: LongVUConfig, checkpoint: Checkpoint | None = None) -> LongVUModel:
    """Load (or seed) every piece; with cfg.quantize_vision the vision pieces are PT2E int8."""
    dino, dino_cfg = load_vit(VitFamily.DINOV2, cfg.dino_checkpoint, cfg.dino, cfg.seed)
    siglip, siglip_cfg = load_vit(VitFamily.SIGLIP, cfg.siglip_checkpoint, cfg.siglip, cfg.seed + 1)
    # the text decoder is prepared for the backend that runs it: 8da4w for ExecuTorch, the
    # MatMulNBits (ONNX) or CoreML int4/int8 weight quantization simulated for the others
    llm_backend = cfg.backend.value
    prepared = prepare_model(dataclasses.replace(cfg.llm, backend=llm_backend), checkpoint)
    dim = prepared.model.args.dim
    projector = load_projector(
        cfg.projector_checkpoint, siglip_cfg, dim, cfg.compress.hi_grid, cfg.compress.lo_grid, cfg.seed + 2
    )
    report = {"llm": prepared.quant_report}
    cfg = dataclasses.replace(cfg, dino=dino_cfg, siglip=siglip_cfg)
    float_vision = None
    if cfg.quantize_vision:
        float_vision = (dino, siglip, projector)
        dino, siglip, projector, report["vision"] = quantize_vision(dino, siglip, projector, cfg)
    embed = TokenEmbedding(prepared.model.embed_tokens, cfg.context_len)
    decoder = EmbedsDecoder(prepared.wrapper).eval()
    return LongVUModel(
        cfg,
        dino,
        siglip,
        projector,
        embed,
        decoder,
        prepared.model,
        prepared.checkpoint,
        report,
        float_vision,
        prepared.float_model,
    )


def quantize_vision(dino, siglip, projector, cfg: LongVUConfig):
    from export.longvu.quantize import calibration_pixels, quantize_int8

    dino_px, siglip_px = calibration_pixels(cfg.dino.image_size), calibration_pixels(cfg.siglip.image_size)
    dino_q, dino_r = quantize_int8(dino, [(x[None],) for x in dino_px])
    siglip_q, siglip_r = quantize_int8(siglip, [(x[None],) for x in siglip_px])
    with torch.no_grad():
        feats = [(siglip(x[None]),) for x in siglip_px]  # float SigLIP features calibrate the projector
    proj_q, proj_r = quantize_int8(projector, feats)
    return (
        dino_q,
        siglip_q,
        proj_q,
        {
            "dino": dino_r,
            "siglip": siglip_r,
            "project": proj_r,
            "scheme": "pt2e int8 (XNNPACKQuantizer, per-channel weights)",
        },
    )


class EagerPieces:
    """The pieces as eager modules, behind the interface `runtime.video_qa` drives."""

    def __init__(self, model: LongVUModel):
        self.model = model
        self.cfg = model.cfg
        self.max_seq_len = model.decoder.max_seq_len

    @torch.no_grad()
    def dino(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.dino(pixels)

    @torch.no_grad()
    def siglip(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.siglip(pixels)

    @torch.no_grad()
    def project(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hi, lo = self.model.projector(feats)
        return hi, lo

    @torch.no_grad()
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.embed(tokens)

    @torch.no_grad()
    def decode(self, embeds: torch.Tensor, pos: int) -> torch.Tensor:
        from runtime.executorch_runner import native_stderr_silenced

        with native_stderr_silenced():  # the eager llama:: kernels log on every call too
            return self.model.decoder(embeds, torch.tensor([pos], dtype=torch.long)).reshape(-1)


def eager_tokenizer(checkpoint: Checkpoint, folder):
    """The tokenizer exactly as an artifact carries it (tokenizer.json + chat template)."""
    from export.llm.pipeline import _save_tokenizer
    from runtime.tokenizer import ArtifactTokenizer

    return ArtifactTokenizer(Path(folder), _save_tokenizer(checkpoint, Path(folder)))
