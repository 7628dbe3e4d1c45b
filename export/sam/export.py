"""`handheld export sam`: fp32 + int8 artifacts for one backend, checked against eager fp32.

Artifact folder: squeezesam_{fp32,int8}.{pte,onnx,mlpackage}, optionally the LiteMedSAM teacher
exported the same way (teacher_encoder_*, teacher_decoder_*: the bench baseline), and a manifest
with the model config, preprocessing, click encoding, graph checks and parity numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export.backends.coreml import export_static_coreml
from export.backends.executorch import Method, lower_to_executorch, quantize_pt2e
from export.backends.onnx import export_static_onnx
from export.config import Backend
from export.manifest import atomic_artifact_dir, write_manifest
from export.progress import tqdm
from export.sam.config import SamExportConfig, SqueezeSamConfig
from export.sam.model import SqueezeSam, load_checkpoint, shipped_checkpoint
from export.sam.wrappers import SQUEEZESAM_IO, TEACHER_DECODER_IO, TEACHER_ENCODER_IO, TeacherDecoder, TeacherEncoder
from runtime.errors import HandheldError
from runtime.manifest import sha256_file
from runtime.registry import Registry


def calibration_inputs(model: SqueezeSam, n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Real training photos/frames with realistic click maps (0-3 clicks on the content)."""
    from export.sam.data import training_images
    from runtime.clicks import Click
    from runtime.segment import Segmenter

    rng = np.random.default_rng(seed)
    seg = Segmenter(lambda *_: None, model.config.input_spec)
    images = training_images()
    out = []
    for i in rng.choice(len(images), size=min(n, len(images)), replace=False):
        rgb = images[i]
        seg.set_image(rgb)
        h, w = rgb.shape[:2]
        clicks = [
            Click(rng.uniform(0, w), rng.uniform(0, h), bool(k == 0 or rng.random() < 0.6))
            for k in range(int(rng.integers(0, 4)))
        ]
        out.append((torch.from_numpy(seg._image), torch.from_numpy(seg.click_maps(clicks))))
    return out


@dataclass(frozen=True)
class SamRecipe:
    """SqueezeSAM (and its teacher) on one backend: the file suffix, and how one static-shape
    module becomes a model file (calibration None = fp32, else static int8 calibrated on it)."""

    suffix: str
    lower: Callable[[torch.nn.Module, tuple, tuple, Path, list | None], dict]  # -> graph summary


SAM_RECIPES: Registry[SamRecipe] = Registry("SqueezeSAM backend")


def _lower_executorch(module, example, io, out_file, calibration) -> dict:
    """XNNPACK; int8 = PT2E static quantization (XNNPACK's quantizer) on the calibration inputs."""
    module = quantize_pt2e(module, example, calibration) if calibration else module
    methods = {"forward": Method(module, example)}
    return lower_to_executorch(methods, out_file, planning="default", desc="squeezesam")["forward"]


def _lower_coreml(module, example, io, out_file, calibration) -> dict:
    """mlprogram iOS 17; int8 = fp16 compute with int8 per-channel weights (no activation calibration)."""
    return export_static_coreml(module, example, io, out_file, int8=calibration is not None)


SAM_RECIPES.register(Backend.EXECUTORCH)(SamRecipe(".pte", _lower_executorch))
SAM_RECIPES.register(Backend.ONNX)(SamRecipe(".onnx", export_static_onnx))  # int8 = QDQ, onnxruntime's static quantizer
SAM_RECIPES.register(Backend.COREML)(SamRecipe(".mlpackage", _lower_coreml))


def manifest_fields(config: SqueezeSamConfig) -> dict:
    """What a phone app needs to feed the model (keys: export/bundle/contract.py SAM_*)."""
    s = config.image_size
    inputs, outputs = SQUEEZESAM_IO
    return {
        "inputs": [
            {"name": inputs[0], "shape": [1, 3, s, s], "dtype": "float32"},
            {"name": inputs[1], "shape": [1, config.click_channels, s, s], "dtype": "float32"},
        ],
        "outputs": [{"name": outputs[0], "shape": [1, 1, s, s], "dtype": "float32"}],
        "mask_threshold": 0.0,
        "preprocessing": {
            "image_size": s,
            "resize": "longest_side",  # bilinear with antialiasing, aspect kept; gray -> RGB, alpha dropped
            "pad": "bottom_right",  # zeros after normalization
            "pixel_mean": list(config.pixel_mean),  # RGB on the 0..1 scale
            "pixel_std": list(config.pixel_std),
        },
        "clicks": {
            "encoding": "gaussian",  # exp(-d^2 / (2 sigma_px^2)), d from pixel centres (+0.5), max-combined
            "sigma_px": config.clicks.sigma_px,  # in model-input pixels: image (x, y) * image_size / max(H, W)
            "max_clicks": config.clicks.max_clicks,
            "prev_mask_channel": config.prev_mask_channel,
        },
        "postprocessing": "crop logits to the unpadded content, bilinear resize to H x W, mask = logits > mask_threshold",
        "auto_mode": "all-zero click maps -> salient object; one positive click at its deepest interior point; run again",
        "model": config.to_dict(),
    }


def export_sam(cfg: SamExportConfig, out: Path) -> dict:
    """Export fp32 and int8 for cfg.backend into `out`, run parity, write the manifest."""
    from export.sam.parity import check_variants

    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else shipped_checkpoint()
    model = load_checkpoint(checkpoint)
    calibration = calibration_inputs(model, cfg.calibration_images)
    example = calibration[0]
    recipe = SAM_RECIPES.get(cfg.backend)
    with atomic_artifact_dir(Path(out)) as tmp:
        variants, graphs = {}, {}
        for variant, calib in tqdm([("fp32", None), ("int8", calibration)], desc=f"export sam ({cfg.backend.value})"):
            name = f"squeezesam_{variant}{recipe.suffix}"
            graphs[variant] = recipe.lower(model, example, SQUEEZESAM_IO, tmp / name, calib)
            variants[variant] = {"file": name}
        teacher = export_teacher(cfg, tmp) if cfg.with_teacher else None
        parity = check_variants(tmp, cfg.backend.value, model, variants, graphs)
        fields = manifest_fields(model.config)
        write_manifest(
            tmp,
            "sam",
            backend=cfg.backend.value,
            model_file=variants["int8"]["file"],
            export_config=cfg.to_dict(),
            checkpoint={"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
            **fields,
            variants=variants,
            graph=graphs,
            teacher=teacher,
            parity=parity,
        )
    if cfg.enforce_parity and not parity["passed"]:
        raise HandheldError(
            f"parity failed for {out}: {parity['failures']}",
            "see manifest.json parity; the artifact was kept for inspection",
        )
    return parity


def export_teacher(cfg: SamExportConfig, folder: Path) -> dict:
    """LiteMedSAM exported the same way (same backend, fp32 and int8 where it lowers)."""
    from export.sam.teacher import load_teacher

    teacher = load_teacher("lite-medsam")
    s = teacher.image_size
    image = torch.rand(1, 3, s, s)
    with torch.no_grad():
        embedding = teacher.embed(image)
    box = torch.tensor([[s * 0.25, s * 0.25, s * 0.75, s * 0.75]])
    recipe = SAM_RECIPES.get(cfg.backend)
    files = {}
    parts = [
        ("encoder", TeacherEncoder(teacher), (image,), TEACHER_ENCODER_IO),
        ("decoder", TeacherDecoder(teacher), (embedding, box), TEACHER_DECODER_IO),
    ]
    for part, module, example, io in tqdm(parts, desc="export teacher"):
        name = f"teacher_{part}_fp32{recipe.suffix}"
        recipe.lower(module.eval(), example, io, folder / name, None)
        files[part] = name
    return {
        "name": "lite-medsam",
        "image_size": s,
        "variant": "fp32",
        "files": files,
        "note": "encoder once per image, box-prompted decoder per click",
    }
