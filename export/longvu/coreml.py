"""LongVU's CoreML variant: every method its own .mlpackage.

    dino.mlpackage, siglip.mlpackage, project.mlpackage   fp32 mlprogram (iOS17)
    embed.mlpackage                                       fp16, int8 per-row table (iOS18)
    decode.mlpackage                                      fp16, int4 per-block weights, KV cache as states (iOS18)

CoreML predictions need Apple's runtime (macOS/iOS). On Linux the vision programs are run by a
small interpreter (below) that executes each op with PyTorch, and embed/decode by
runtime/mil_interpreter.py (coremltools' value inference, states kept between calls), so parity
checks what the packages contain (not Apple's kernels) on the same real sample videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from export.sam.coreml_check import _value, load_mil_program

COREML_METHODS = ("dino", "siglip", "project")


def _conv(op, a):
    pad = [int(p) for p in a["pad"]]  # [top, bottom, left, right]
    x = F.pad(a["x"], (pad[2], pad[3], pad[0], pad[1]))
    bias = None if a.get("bias") is None else torch.as_tensor(np.asarray(a["bias"]))
    return F.conv2d(
        x,
        torch.as_tensor(np.asarray(a["weight"])),
        bias,
        stride=tuple(int(s) for s in a["strides"]),
        dilation=tuple(int(d) for d in a["dilations"]),
        groups=int(a["groups"]),
    )


def _slice(op, a):
    x = a["x"]
    begin, end = np.asarray(a["begin"]).tolist(), np.asarray(a["end"]).tolist()
    stride = np.asarray(a["stride"]).tolist() if a.get("stride") is not None else [1] * x.ndim
    bmask, emask = (
        np.asarray(a[k]).tolist() if a.get(k) is not None else [False] * x.ndim for k in ("begin_mask", "end_mask")
    )
    index = tuple(slice(None if bmask[i] else begin[i], None if emask[i] else end[i], stride[i]) for i in range(x.ndim))
    squeeze = np.asarray(a["squeeze_mask"]).tolist() if a.get("squeeze_mask") is not None else [False] * x.ndim
    out = x[index]
    return out.squeeze(tuple(i for i, sq in enumerate(squeeze) if sq)) if any(squeeze) else out


def _matmul(op, a):
    x, y = a["x"], a["y"]
    x = x.transpose(-1, -2) if bool(a.get("transpose_x", False)) else x
    y = y.transpose(-1, -2) if bool(a.get("transpose_y", False)) else y
    return torch.matmul(x, y)


def _t(v):
    return v if torch.is_tensor(v) else torch.as_tensor(np.asarray(v))


VIT_OPS = {
    "const": lambda op, a: op.outputs[0].val,
    "add": lambda op, a: _t(a["x"]) + _t(a["y"]),
    "sub": lambda op, a: _t(a["x"]) - _t(a["y"]),
    "mul": lambda op, a: _t(a["x"]) * _t(a["y"]),
    "real_div": lambda op, a: _t(a["x"]) / _t(a["y"]),
    "conv": _conv,
    "reshape": lambda op, a: a["x"].reshape([int(s) for s in np.asarray(a["shape"])]),
    "transpose": lambda op, a: a["x"].permute([int(p) for p in np.asarray(a["perm"])]),
    "concat": lambda op, a: torch.cat([_t(v) for v in a["values"]], dim=int(a["axis"])),
    "layer_norm": lambda op, a: F.layer_norm(
        a["x"], a["x"].shape[-len(np.asarray(a["axes"])) :], _t(a["gamma"]), _t(a["beta"]), float(a["epsilon"])
    ),
    "linear": lambda op, a: F.linear(a["x"], _t(a["weight"]), None if a.get("bias") is None else _t(a["bias"])),
    "matmul": _matmul,
    "softmax": lambda op, a: torch.softmax(a["x"], dim=int(a["axis"])),
    "gelu": lambda op, a: F.gelu(
        a["x"], approximate="tanh" if str(a.get("mode", "EXACT")) == "TANH_APPROXIMATION" else "none"
    ),
    "slice_by_index": _slice,
}


def _as_tensor(v):
    """Numeric values become fp32 tensors; strings and bools (pad types, modes, masks) stay."""
    if torch.is_tensor(v):
        return v.float() if v.is_floating_point() else v
    arr = np.asarray(v)
    return torch.from_numpy(arr.astype(np.float32)) if arr.dtype.kind == "f" else v


def run_mil(program, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Interpret the program's main function (fp32) on the named inputs."""
    fn = program.functions["main"]
    env = {name: t.float() for name, t in inputs.items()}
    for op in fn.operations:
        if op.op_type not in VIT_OPS:
            raise NotImplementedError(f"MIL op {op.op_type} has no interpreter rule")
        out = VIT_OPS[op.op_type](op, {k: _value(v, env) for k, v in op.inputs.items()})
        env[op.outputs[0].name] = _as_tensor(out)
    return [env[v.name] for v in fn.outputs]


class MilMethod:
    """A vision .mlpackage called like an ExecuTorch method: list of inputs -> list of outputs."""

    def __init__(self, package: Path, input_names: list[str]):
        self.program = load_mil_program(Path(package))
        self.input_names = input_names

    def execute(self, args: list[torch.Tensor]) -> list[torch.Tensor]:
        return run_mil(self.program, dict(zip(self.input_names, args)))
