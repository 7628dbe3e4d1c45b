"""SpinQuant/QuaRot rotations for Llama-family decoders.

`apply_rotation` is the one entry point the export pipeline calls, before quantization:

    1. untie embeddings, fold RMSNorm gammas into the next linears   (fuse.py)
    2. fold R1 (residual stream) and R2 (per-layer value heads)      (rotate.py)
       quarot: random Hadamards from a fixed seed; spinquant: learned, from the rotation file
    3. R4: online Hadamard on the down_proj input, its transpose folded into down_proj
    4. R3 (only with a quantized KV cache): online Hadamard on q and k after RoPE
Order matters: norms fuse before R1 (RMSNorm commutes with R1 only once its gamma is 1), and
R4 folds into down_proj's input after R1 has been folded into its output (they commute anyway,
being on different sides). In full precision the result computes the same function.
"""

from __future__ import annotations

from pathlib import Path

import torch

from export.config import Rotation, parse_enum
from export.rotation.adapter import DecoderSlots, slots_for
from export.rotation.fuse import fuse_rms_norms
from export.rotation.hadamard import random_hadamard
from export.rotation.online import OnlineHadamard
from export.rotation.rotate import fold_r1, fold_r2, rotate_input
from export.rotation.rotation_file import SHIPPED, load_rotation_file
from runtime.errors import HandheldError

QUAROT_SEED = 0


def quarot_rotations(slots: DecoderSlots, seed: int = QUAROT_SEED) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random-Hadamard R1 [dim, dim] and per-layer R2 [head_dim, head_dim], float64."""
    g = torch.Generator().manual_seed(seed)
    r1 = random_hadamard(slots.dim, g)
    return r1, [random_hadamard(layer.head_dim, g) for layer in slots.layers]


def default_rotation_file(model) -> Path:
    """The shipped SpinQuant rotations (validated against `model` when loaded)."""
    return SHIPPED["smollm2-135m"]


def install_online_hadamards(slots: DecoderSlots, quantized_kv: bool, mode: str = "matmul") -> None:
    """R4 on every down_proj input (folded into down_proj), and R3 on q/k when the KV cache is quantized."""
    for layer in slots.layers:
        r4 = OnlineHadamard.for_size(layer.ffn_dim, "FFN size", mode)
        rotate_input(layer.down, r4.matrix())
        layer.set_down_rotate(r4)
        if quantized_kv:
            layer.set_qk_rotate(OnlineHadamard.for_size(layer.head_dim, "head_dim", mode))


def fold_rotations(model, r1: torch.Tensor, r2: list[torch.Tensor]) -> DecoderSlots:
    """Fuse norms and fold R1/R2 into `model` in place."""
    slots = slots_for(model)
    fuse_rms_norms(slots)
    fold_r1(slots, r1)
    fold_r2(slots, r2)
    return slots


def rotations_for(model, rotation: Rotation, rotation_file: str | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if rotation is Rotation.QUAROT:
        if rotation_file:
            raise HandheldError(
                "--rotation-file is only read with --rotation spinquant",
                "drop --rotation-file, or use --rotation spinquant",
            )
        return quarot_rotations(slots_for(model))
    r1, r2, _ = load_rotation_file(rotation_file or default_rotation_file(model), model)
    return r1, r2


def apply_rotation(
    model, rotation: Rotation | str, rotation_file: str | None = None, *, quantized_kv: bool, mode: str = "matmul"
):
    """Llama -> the same Llama, rotated in place (and returned).

    model: an unrotated, unquantized float model (as `load_checkpoint` returns it).
    rotation: none (returned untouched) | quarot | spinquant.
    rotation_file: spinquant's learned R1/R2 (default: the shipped SmolLM2 file); validated
        against the model, HandheldError when it does not match.
    quantized_kv: also install R3 (needed only when K/V are quantized).
    The returned model has untied embeddings, unit RMSNorm gammas, R1/R2/R4 folded into its
    weights and OnlineHadamard modules in `mlp.down_rotate` (and `self_attn.qk_rotate`);
    `model.rotation` records what was applied."""
    rotation = parse_enum(Rotation, rotation, "rotation")
    if rotation is Rotation.NONE:
        return model
    slots_for(model)  # unknown architecture -> HandheldError before anything changes
    r1, r2 = rotations_for(model, rotation, rotation_file)
    slots = fold_rotations(model, r1, r2)
    install_online_hadamards(slots, quantized_kv, mode)
    model.rotation = {
        "rotation": rotation.value,
        "file": str(rotation_file or "") if rotation is Rotation.SPINQUANT else None,
        "r3": quantized_kv,
        "online_mode": mode,
    }
    return model
