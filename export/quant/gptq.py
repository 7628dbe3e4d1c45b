"""GPTQ (Frantar et al., 2022) weight quantization on the same symmetric grid as RTN.

Each linear's weight is quantized one input column at a time, in blocks; the error of every
column is spread over the columns not yet quantized through the inverse Hessian of the layer's
inputs (H = 2 X^T X over calibration tokens), so the layer's *output* error is what is minimized,
not the weight error. Layers are processed in order, each seeing the inputs the already
quantized layers before it produce.

Grid: symmetric signed `bits`, one scale per output channel or per group of `group` consecutive
input channels. Scales are fixed from the weight before the sweep ("static groups"), so a
group-32 result is exactly representable by the deployable 8da4w kernels, also with
`act_order` (columns visited by decreasing Hessian diagonal).
"""

from __future__ import annotations

import torch
from torch import nn

from export.quant import QuantScheme
from export.quant.fake import _best_clip
from runtime.errors import HandheldError


def _scales(w: torch.Tensor, bits: int, group: int | None, clip_search: bool) -> torch.Tensor:
    """[out, in] weight -> per-column scale [out, in] (each group's scale repeated)."""
    qmax = 2 ** (bits - 1) - 1
    rows = w if group is None else w.reshape(-1, group)
    clip = _best_clip(rows, bits) if clip_search else 1.0
    scale = (rows.abs().amax(-1, keepdim=True) * clip / qmax).clamp_min(1e-8)
    return scale.expand_as(rows).reshape(w.shape)


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group: int | None = None,
    clip_search: bool = True,
    block: int = 128,
    damp: float = 0.01,
    act_order: bool = True,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """w: [out, in]; hessian: [in, in] (sum of x^T x) -> dequantized weight, same shape/dtype.

    `scale` ([out, in], one value per column) imposes another quantizer's grid (an exporter's
    own scales); by default the RTN scales of `bits`/`group`/`clip_search` are used."""
    if scale is None and group is not None and w.shape[1] % group:
        raise HandheldError(
            f"in_features {w.shape[1]} is not a multiple of group {group}",
            "use a group size that divides every linear's input size",
        )
    dtype = w.dtype
    w = w.detach().double().clone()
    h = hessian.detach().double().clone()
    qmax = 2 ** (bits - 1) - 1
    scale = (
        _scales(w, bits, group, clip_search)
        if scale is None
        else scale.detach().double().to(w.device).expand_as(w).clone()
    )
    scale[scale == 0] = 1e-12  # an all-zero block: any scale reproduces it
    dead = torch.diag(h) == 0  # inputs never seen: any value works, keep RTN there
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(w.shape[1], device=w.device)
    inv = torch.argsort(perm)
    w, scale, h = w[:, perm], scale[:, perm], h[perm][:, perm]
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    try:
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except torch.linalg.LinAlgError as e:  # pragma: no cover - damping makes this rare
        raise HandheldError("the calibration Hessian is not positive definite", "use more calibration tokens") from e
    q = torch.zeros_like(w)
    n = w.shape[1]
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        wb, err = w[:, i0:i1].clone(), torch.zeros_like(w[:, i0:i1])
        hb = hinv[i0:i1, i0:i1]
        for j in range(i1 - i0):
            col, s = wb[:, j], scale[:, i0 + j]
            qc = torch.clamp(torch.round(col / s), -qmax - 1, qmax) * s
            q[:, i0 + j] = qc
            e = (col - qc) / hb[j, j]
            wb[:, j:] -= e.unsqueeze(1) * hb[j, j:].unsqueeze(0)
            err[:, j] = e
        w[:, i1:] -= err @ hinv[i0:i1, i1:]
    return q[:, inv].to(dtype)


def _layer_inputs(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = model.embed_tokens(tokens)
    s = tokens.shape[1]
    return x, model.rope_cos.narrow(0, 0, s).unsqueeze(1), model.rope_sin.narrow(0, 0, s).unsqueeze(1)


@torch.no_grad()
def gptq_weights(
    model,
    windows: torch.Tensor,
    scheme: QuantScheme,
    batch: int = 8,
    progress: bool = True,
    scales: dict[str, torch.Tensor] | None = None,
    output_bits: int = 0,
) -> dict[str, torch.Tensor]:
    """GPTQ every block linear of `model` (as `model.linears()` names them) on calibration
    `windows` [n, S]. Returns {name: quantized weight}; `model` is left unchanged.
    `output_bits` > 0 also quantizes lm_head (key "lm_head", group `scheme.w_group`) on the
    final-normed outputs of the quantized blocks; `scales["lm_head"]` imposes its grid.

    `model` is the float model about to be quantized (rotated already, if it is); activation
    quantization is not applied while the Hessians are collected, as in QuaRot/SpinQuant.
    `scales` ({name: [out, in] per-column scale}) imposes an exporter's grid."""
    from export.progress import tqdm

    if scheme.w_bits >= 16:
        return {}
    names = {id(m): n for n, m in model.linears().items()}
    x, cos, sin = [], None, None
    for i in range(0, len(windows), batch):
        xi, cos, sin = _layer_inputs(model, windows[i : i + batch])
        x.append(xi)
    out: dict[str, torch.Tensor] = {}
    for layer in tqdm(model.layers, desc=f"GPTQ {scheme.name}", disable=not progress):
        linears = [m for m in layer.modules() if id(m) in names]
        hess = {
            id(m): torch.zeros(m.in_features, m.in_features, dtype=torch.float64, device=m.weight.device)
            for m in linears
        }

        def collect(mod, args, hess=hess):
            a = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            hess[id(mod)] += a.T @ a

        hooks = [m.register_forward_pre_hook(collect) for m in linears]
        for xi in x:
            layer(xi, cos, sin, 0)
        for h in hooks:
            h.remove()
        originals = {}
        for m in linears:
            originals[id(m)] = m.weight.data
            given = None if scales is None else scales[names[id(m)]]
            q = gptq_quantize(
                m.weight.data, 2 * hess[id(m)], scheme.w_bits, scheme.w_group, scheme.w_clip_search, scale=given
            )
            out[names[id(m)]] = q
            m.weight.data = q
        x = [layer(xi, cos, sin, 0) for xi in x]  # the next layer sees the quantized layer's output
        for m in linears:
            m.weight.data = originals[id(m)]
    if output_bits:
        hess = torch.zeros(
            model.lm_head.in_features, model.lm_head.in_features, dtype=torch.float64, device=x[0].device
        )
        for xi in x:
            a = model.norm(xi).reshape(-1, hess.shape[0]).double()
            hess += a.T @ a
        given = None if scales is None else scales["lm_head"]
        out["lm_head"] = gptq_quantize(
            model.lm_head.weight.data, 2 * hess, output_bits, scheme.w_group, scheme.w_clip_search, scale=given
        )
    return out


def gptq_quantizer(weights: dict[str, torch.Tensor]):
    """A `WeightQuantizer` (for `fake_quantize_model`) serving precomputed GPTQ weights."""

    def quantize(name: str, lin: nn.Linear) -> torch.Tensor:
        return weights[name]

    return quantize
