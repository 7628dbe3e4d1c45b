"""Build the vision encoders and projector from checkpoints, or from a seed.

Accepted checkpoints, for each encoder:
- an HF folder (config.json + model.safetensors / pytorch_model.bin) of Dinov2Model,
  SiglipVisionModel or SiglipModel;
- a single .safetensors / .bin / .pt state dict, including LongVU's released checkpoint, whose
  towers sit under longer prefixes: the prefix is found from a key every checkpoint of the
  family has (`vit.ANCHOR_KEYS`).
Shapes (dim, depth, MLP width, patch, position grid) are read from the tensors; the head count
from config.json when present, otherwise from the ViT size tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from export.longvu.config import VitConfig, VitFamily
from export.longvu.projector import Projector
from export.longvu.vit import ANCHOR_KEYS, IGNORED_PREFIXES, VIT_CLASSES
from runtime.errors import HandheldError, error_line

HEADS_BY_DIM = {384: 6, 768: 12, 1024: 16, 1152: 16, 1536: 24}  # ViT-S/B/L, so400m, giant
PROJECTOR_ANCHOR = "mm_projector.0.weight"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from an HF folder or a single weights file."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise HandheldError(
                f"{path} holds no *.safetensors or pytorch_model*.bin", "pass an HF model folder or a weights file"
            )
    elif path.is_file():
        files = [path]
    else:
        raise HandheldError(f"checkpoint {path} does not exist", "pass an HF model folder or a .safetensors/.bin file")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(str(f)))
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as err:  # safetensors/pickle raise many types for damaged files
            raise HandheldError(
                f"cannot read weights from {f}: {error_line(err, 200)}", "check the file is a complete checkpoint"
            ) from None
    return state


def strip_prefix(state: dict[str, torch.Tensor], anchor: str, what: str) -> dict[str, torch.Tensor]:
    """The sub-dict under the one prefix that holds `anchor` (e.g. `vision_model.`)."""
    prefixes = sorted({k[: -len(anchor)] for k in state if k.endswith(anchor)})
    if not prefixes:
        raise HandheldError(f"no {what} weights found (no key ending in {anchor})", f"pass a {what} checkpoint")
    if len(prefixes) > 1:
        raise HandheldError(
            f"several {what} towers in one checkpoint: {prefixes}", "extract the one to use into its own file"
        )
    p = prefixes[0]
    return {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}


def _heads(path: Path, family: VitFamily, dim: int) -> int:
    cfg_file = (path if path.is_dir() else path.parent) / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        cfg = cfg.get("vision_config", cfg) if family is VitFamily.SIGLIP else cfg
        if "num_attention_heads" in cfg and cfg.get("hidden_size") == dim:
            return int(cfg["num_attention_heads"])
    if dim not in HEADS_BY_DIM:
        raise HandheldError(
            f"cannot tell the head count of a {dim}-wide {family.value} ViT", "put its config.json beside the weights"
        )
    return HEADS_BY_DIM[dim]


def config_from_state(state: dict[str, torch.Tensor], family: VitFamily, image_size: int, heads: int) -> VitConfig:
    """Read a ViT's shape from its tensors; image_size is what DINOv2 runs at (SigLIP's is fixed)."""
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer")}
    if family is VitFamily.DINOV2:
        conv = state["embeddings.patch_embeddings.projection.weight"]
        grid = int((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5)
        fc1 = state["encoder.layer.0.mlp.fc1.weight"]
        return VitConfig(
            family, image_size, conv.shape[-1], conv.shape[0], len(layers), heads, fc1.shape[0], pos_grid=grid
        )
    conv = state["embeddings.patch_embedding.weight"]
    grid = int(state["embeddings.position_embedding.weight"].shape[0] ** 0.5)
    fc1 = state["encoder.layers.0.mlp.fc1.weight"]
    return VitConfig(family, grid * conv.shape[-1], conv.shape[-1], conv.shape[0], len(layers), heads, fc1.shape[0])


def random_vit(cfg: VitConfig, seed: int) -> nn.Module:
    """A ViT with seeded random weights (truncated-normal 0.02 linears, as HF initializes)."""
    torch.manual_seed(seed)
    model = VIT_CLASSES[cfg.family](cfg)
    for name, p in model.named_parameters():
        if p.ndim >= 2 or name.endswith(("cls_token", "position_embeddings")):
            nn.init.trunc_normal_(p, std=0.02)
    model.after_load()
    return model.eval().requires_grad_(False)


def load_vit(
    family: VitFamily, source: str | Path | None, default: VitConfig, seed: int
) -> tuple[nn.Module, VitConfig]:
    """The encoder from `source` (None: seeded random weights in `default`'s shape)."""
    if source is None:
        return random_vit(default, seed), default
    path = Path(source).expanduser()
    state = strip_prefix(read_state_dict(path), ANCHOR_KEYS[family], family.value)
    state = {
        k: v.float()
        for k, v in state.items()
        if not k.startswith(IGNORED_PREFIXES[family]) and k != "embeddings.position_ids"
    }
    dim = next(v.shape[0] for k, v in state.items() if k == ANCHOR_KEYS[family])
    cfg = config_from_state(state, family, default.image_size, _heads(path, family, dim))
    model = VIT_CLASSES[family](cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise HandheldError(
            f"{path} does not match a {family.value} ViT: missing {missing[:4]}, unexpected {unexpected[:4]}",
            f"pass an HF {family.value} checkpoint (Dinov2Model / SiglipVisionModel layout)",
        )
    model.after_load()
    return model.eval().requires_grad_(False), cfg


def load_projector(
    source: str | Path | None, vision: VitConfig, llm_dim: int, hi_grid: int, lo_grid: int, seed: int
) -> Projector:
    """The mm_projector MLP from a checkpoint holding `mm_projector.{0,2}.*`, or seeded random."""
    proj = Projector(vision.dim, llm_dim, vision.grid, hi_grid, lo_grid)
    if source is None:
        torch.manual_seed(seed)
        for m in proj.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        return proj.eval().requires_grad_(False)
    state = strip_prefix(read_state_dict(Path(source)), PROJECTOR_ANCHOR, "projector")
    state = {k.removeprefix("mm_projector."): v.float() for k, v in state.items() if k.startswith("mm_projector.")}
    try:
        proj.mlp.load_state_dict(state)
    except RuntimeError as err:
        raise HandheldError(
            f"the projector in {source} does not fit {vision.dim} -> {llm_dim}: {error_line(err, 200, last=True)}",
            "pass a projector trained for this SigLIP and LLM (a 2-layer GELU MLP)",
        ) from None
    return proj.eval().requires_grad_(False)
