"""Learning SpinQuant's R1/R2: Cayley SGD on the orthogonal manifold, model weights frozen,
loss = next-token cross-entropy of the fake-quantized rotated model on calibration windows.

Two learners compute exactly what the folded, fake-quantized model computes:
- weights in the loss (`weight_quant_in_loss`, the default and the paper's RTN recipe): each block linear's
  weight is a parametrization W -> fakequant(R_out^T W R_in) (R_in = R1 for readers, per-head
  R2 for o_proj; R_out = R1 for writers, per-head R2 for v), the embedding output is
  multiplied by R1 and the head input by R1^T (both stay float, so R1 cancels there). Rotating
  every weight costs about as much as a 256-token forward pass, per step.
- activations only (the paper's recipe before GPTQ; cheaper, but blind to the weights' error): with float weights a
  rotation only matters where a tensor is quantized, so the residual stream stays unrotated
  and each quantization point computes Q(x R) R^T: the norm outputs (R1, read by q/k/v and
  gate/up), o_proj's input and the V cache (per-head R2). A few [S, dim]x[dim, dim] products.
R4 (and R3 with a quantized KV cache) are the fixed online Hadamards of the export in both.
Rotations live in float64 (the optimizer's state too) and are cast to float32 once per step.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from export.quant import SCHEMES
from export.quant.fake import ActQuant, fake_quant_tokens, fake_quant_weight
from export.quant.simulate import fake_quantize_model, quantize_inputs
from export.rotation import install_online_hadamards, quarot_rotations
from export.rotation.adapter import DecoderSlots, slots_for
from export.rotation.cayley import CayleySGD
from export.rotation.fuse import fuse_rms_norms
from export.rotation.rotation_file import save_rotation_file
from runtime.errors import HandheldError


@dataclass(frozen=True)
class RotationRecipe:
    """Defaults = the 2-core CPU recipe (about 13 min for SmolLM2-135M: 64 steps of 4 x 256
    tokens, weights fake-quantized in the loss, ~12 s a step). The paper's recipe (GPU):
    scheme W4A4KV4, steps 100, batch 8, seq_len 2048, lr 1.5 on 800 WikiText-2 samples; here
    `--batch 8 --seq-len 2048` (the calibration split has ~430k tokens, enough for 200 distinct
    windows of 2048; windows are reused beyond that)."""

    scheme: str = "W4A4KV4"  # the fake quantization inside the loss (export.quant.SCHEMES)
    steps: int = 64
    batch: int = 4
    seq_len: int = 256
    lr: float = 1.5
    momentum: float = 0.0
    weight_quant_in_loss: bool = True  # False (activations only) halves the step cost but ignores weight error
    seed: int = 0
    checkpoint_every: int = 5  # steps between resumable checkpoints

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise HandheldError(f"unknown quantization scheme {self.scheme!r}", f"use one of: {', '.join(SCHEMES)}")
        for name in ("steps", "batch", "seq_len", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise HandheldError(f"recipe {name}={getattr(self, name)} must be positive", "pass a positive value")
        if self.seq_len < 16:
            raise HandheldError(
                f"seq_len={self.seq_len} is too short to learn from", "use at least 16 tokens per window"
            )
        if not 0 < self.lr <= 10:
            raise HandheldError(f"lr={self.lr} is out of range", "use 0 < lr <= 10 (the paper uses 1.5)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Rotations(nn.Module):
    """R1 [dim, dim] and one R2 [head_dim, head_dim] per layer, float64 parameters.
    `refresh()` casts them once per step into `r1`/`r2` (float32, differentiable)."""

    def __init__(self, r1: torch.Tensor, r2: list[torch.Tensor]):
        super().__init__()
        self.R1 = nn.Parameter(r1.double().clone())
        self.R2 = nn.ParameterList(nn.Parameter(r.double().clone()) for r in r2)
        self.r1: torch.Tensor | None = None
        self.r2: list[torch.Tensor] = []

    def refresh(self) -> None:
        self.r1 = self.R1.float()
        self.r2 = [r.float() for r in self.R2]


class RotatedWeight(nn.Module):
    """Parametrization W -> fakequant(R_out^T W R_in); rotations come from `rot` lazily."""

    def __init__(self, rot: Rotations, r_in, r_out, bits: int, group: int | None, clip_search: bool):
        super().__init__()
        self.rot = [rot]  # a list: keep the shared Rotations out of this module's parameters
        self.r_in, self.r_out, self.bits, self.group, self.clip_search = r_in, r_out, bits, group, clip_search

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        rot = self.rot[0]
        if self.r_in is not None:
            w = self.r_in(rot, w)
        if self.r_out is not None:
            w = self.r_out(rot, w)
        return fake_quant_weight(w, self.bits, self.group, self.clip_search)


def _r1_in(rot, w):
    return w @ rot.r1


def _r1_out(rot, w):
    return rot.r1.T @ w


def _r2_heads_in(layer: int, n_heads: int):
    return lambda rot, w: (w.unflatten(1, (n_heads, -1)) @ rot.r2[layer]).flatten(1, 2)


def _r2_heads_out(layer: int, n_heads: int):
    return lambda rot, w: torch.einsum("de,hdi->hei", rot.r2[layer], w.unflatten(0, (n_heads, -1))).flatten(0, 1)


class RotatedBias(nn.Module):
    """Parametrization b -> b R2 per head (v_proj's bias, Qwen2)."""

    def __init__(self, rot: Rotations, layer: int, n_heads: int):
        super().__init__()
        self.rot, self.layer, self.n_heads = [rot], layer, n_heads

    def forward(self, b):
        return (b.unflatten(0, (self.n_heads, -1)) @ self.rot[0].r2[self.layer]).flatten()


def _weight_learner(learner, slots: DecoderSlots, rot: Rotations, scheme) -> None:
    def param(lin, r_in=None, r_out=None):
        parametrize.register_parametrization(
            lin,
            "weight",
            RotatedWeight(rot, r_in, r_out, scheme.w_bits, scheme.w_group, scheme.w_clip_search),
            unsafe=True,
        )

    for i, layer in enumerate(slots.layers):
        for lin in layer.attn_inputs + layer.mlp_inputs:
            param(lin, _r1_in, _r2_heads_out(i, layer.n_kv_heads) if lin is layer.values else None)
        if layer.values.bias is not None:
            parametrize.register_parametrization(
                layer.values, "bias", RotatedBias(rot, i, layer.n_kv_heads), unsafe=True
            )
        param(layer.attn_out, _r2_heads_in(i, layer.n_heads), _r1_out)
        param(layer.down, None, _r1_out)
    slots.embedding.register_forward_hook(lambda _m, _a, out: out @ rot.r1)
    slots.head.register_forward_pre_hook(lambda _m, args: (args[0] @ rot.r1.T,))
    fake_quantize_model(learner, scheme, quantize_weights=False)  # activations + KV; weights above


def _rotated_quant(x: torch.Tensor, r: torch.Tensor, bits: int, heads: int | None = None) -> torch.Tensor:
    """Q(x R) R^T over the last dim; with `heads`, R acts on each head's slice and Q on the
    whole last dim (per token). x: [..., n]; r: [n, n] or [n / heads, n / heads]."""
    if heads is None:
        return fake_quant_tokens(x @ r, bits) @ r.T
    y = (x.unflatten(-1, (heads, -1)) @ r).flatten(-2)
    return (fake_quant_tokens(y, bits).unflatten(-1, (heads, -1)) @ r.T).flatten(-2)


class RotatedKVQuant(nn.Module):
    """V-cache slot: per-head Q(v R2) R2^T, v: [B, S, H, D]."""

    def __init__(self, rot: Rotations, layer: int, bits: int):
        super().__init__()
        self.rot, self.layer, self.bits = [rot], layer, bits

    def forward(self, v):
        r = self.rot[0].r2[self.layer]
        return fake_quant_tokens(v @ r, self.bits) @ r.T


def _activation_learner(learner, slots: DecoderSlots, rot: Rotations, scheme) -> None:
    bits = scheme.a_bits
    for i, layer in enumerate(slots.layers):
        if bits < 16:
            for norm in (layer.attn_norm, layer.mlp_norm):
                norm.register_forward_hook(lambda _m, _a, out: _rotated_quant(out, rot.r1, bits))
            layer.attn_out.register_forward_pre_hook(
                lambda _m, args, i=i, h=layer.n_heads: (_rotated_quant(args[0], rot.r2[i], bits, h),)
            )
            quantize_inputs(layer.down, ActQuant(bits))
        if scheme.quantized_kv:
            layer.set_kv_quant(ActQuant(scheme.kv_bits), RotatedKVQuant(rot, i, scheme.kv_bits))


def build_learner(
    model, r1: torch.Tensor, r2: list[torch.Tensor], scheme_name: str, weight_quant_in_loss: bool = False
) -> tuple[nn.Module, Rotations]:
    """A frozen, fused, fake-quantized copy of `model` computing what the model folded with
    the current `Rotations` computes (call `rot.refresh()` before each forward)."""
    scheme = SCHEMES[scheme_name]
    learner = copy.deepcopy(model).float().requires_grad_(False)
    slots: DecoderSlots = slots_for(learner)
    fuse_rms_norms(slots)
    install_online_hadamards(slots, scheme.quantized_kv)
    rot = Rotations(r1, r2)
    if weight_quant_in_loss:
        _weight_learner(learner, slots, rot, scheme)
    else:
        _activation_learner(learner, slots, rot, scheme)
    return learner, rot


def lm_loss(model, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of tokens [B, S]."""
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


def _state(rot, opt, step, recipe, history) -> dict:
    return {
        "R1": rot.R1.detach().cpu(),
        "R2": [r.detach().cpu() for r in rot.R2],
        "opt": opt.state_dict(),
        "step": step,
        "recipe": recipe.to_dict(),
        "history": history,
    }


RESUME_KEYS = ("recipe", "R1", "R2", "opt", "step", "history")


def read_resume_state(path: Path) -> dict:
    """A learn-rotations resume checkpoint, or an error naming it (garbage, another tool's file)."""
    fix = f"delete {path} to start afresh, or pass another --out"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types
        raise HandheldError(f"resume file {path} cannot be read ({type(err).__name__})", fix) from None
    if not isinstance(state, dict) or any(k not in state for k in RESUME_KEYS):
        raise HandheldError(f"resume file {path} is not a learn-rotations checkpoint", fix)
    return state


def learn_rotations(
    model,
    windows: torch.Tensor,
    recipe: RotationRecipe,
    out: str | Path,
    resume_file: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Learn R1/R2 for `model` (the original checkpoint model) on calibration `windows`
    ([n, seq_len] int64) and write the rotation file `out`. Resumes from `resume_file`
    (default: OUT.ckpt) when it holds a checkpoint of the same recipe; CUDA when present."""
    from export.progress import tqdm

    out = Path(out)
    resume_file = Path(resume_file) if resume_file else out.with_suffix(".ckpt")
    if windows.shape[0] < recipe.batch or windows.shape[1] != recipe.seq_len:
        raise HandheldError(
            f"calibration windows {tuple(windows.shape)} do not fit batch {recipe.batch} x seq_len {recipe.seq_len}",
            "use more calibration text or a smaller batch",
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(recipe.seed)
    r1, r2 = quarot_rotations(slots_for(model), seed=recipe.seed)
    learner, rot = build_learner(model, r1, r2, recipe.scheme, recipe.weight_quant_in_loss)
    learner.to(device)
    rot.to(device)
    opt = CayleySGD(rot.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / recipe.steps)  # linear decay
    order = torch.randperm(windows.shape[0], generator=torch.Generator().manual_seed(recipe.seed))
    # seconds: wall clock; cpu_seconds: this process's CPU time (on a shared machine,
    # cpu_seconds / threads estimates the wall time the run would take alone)
    history = {
        "loss": [],
        "seconds": 0.0,
        "cpu_seconds": 0.0,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    start = 0
    if resume_file.is_file():
        state = read_resume_state(resume_file)
        if state["recipe"] == recipe.to_dict():
            with torch.no_grad():
                rot.R1.copy_(state["R1"])
                for p, r in zip(rot.R2, state["R2"]):
                    p.copy_(r)
            opt.load_state_dict(state["opt"])
            start, history = state["step"], state["history"]
            for _ in range(start):
                sched.step()
            print(f"resuming from {resume_file} at step {start}", file=sys.stderr)
        else:
            print(f"ignoring {resume_file}: it was written by another recipe", file=sys.stderr)
    t0 = time.perf_counter() - history["seconds"]
    c0 = time.process_time() - history.get("cpu_seconds", 0.0)
    bar = tqdm(
        range(start, recipe.steps), initial=start, total=recipe.steps, desc="learning R1/R2", disable=not progress
    )
    for step in bar:
        idx = order[[(step * recipe.batch + j) % len(order) for j in range(recipe.batch)]]
        rot.refresh()
        loss = lm_loss(learner, windows[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history["loss"].append(float(loss))
        history["seconds"] = time.perf_counter() - t0
        history["cpu_seconds"] = time.process_time() - c0
        bar.set_postfix(loss=f"{float(loss):.3f}")
        if (step + 1) % recipe.checkpoint_every == 0 and step + 1 < recipe.steps:
            torch.save(_state(rot, opt, step + 1, recipe, history), resume_file)
    history["seconds"] = time.perf_counter() - t0
    history["cpu_seconds"] = time.process_time() - c0
    path = save_rotation_file(
        out, rot.R1.detach().cpu(), [r.detach().cpu() for r in rot.R2], model, recipe.to_dict(), history
    )
    resume_file.unlink(missing_ok=True)
    return path


def calibration_windows(tokenizer, seq_len: int, wanted: int, min_windows: int = 1) -> torch.Tensor:
    """[n, seq_len] disjoint windows of the calibration split, n = min(wanted, what fits);
    a calibration text too short for `min_windows` windows is an error."""
    from export.data.text import split_text

    ids = tokenizer(split_text("calibration"), return_tensors="pt", add_special_tokens=False).input_ids[0]
    fits = len(ids) // seq_len
    if fits < min_windows:
        raise HandheldError(
            f"the calibration text has {len(ids)} tokens, too short for {min_windows} window(s) of {seq_len}",
            "use a shorter --seq-len or a smaller --batch",
        )
    n = min(wanted, fits)
    step = seq_len * (fits // n)  # spread the windows over the whole split
    return torch.stack([ids[i * step : i * step + seq_len] for i in range(n)])


def learn_for_checkpoint(
    checkpoint: str | None, recipe: RotationRecipe, out: str | Path, progress: bool = True
) -> Path:
    """Load a checkpoint (None = the offline SmolLM2), learn its rotations, write `out`."""
    from export.llm.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    windows = calibration_windows(ck.tokenizer, recipe.seq_len, recipe.steps * recipe.batch, recipe.batch)
    return learn_rotations(ck.model, windows, recipe, out, progress=progress)
