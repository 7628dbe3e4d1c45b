"""Evaluate a saved .mlpackage's MIL program op by op on Linux: the one MIL interpreter.

Apple's CoreML runtime exists only on macOS. What Linux can still do is load the program the
package contains (the protobuf + weight blob, via coremltools' milproto loader) and run every
operation. Two kernel sets, one loop:

- `kernels="numpy"` (the decoders: LLM, LongVU embed/decode): every op through the
  `value_inference` coremltools itself defines for it (numpy math, the code its constant
  folding uses). Ops without one get a rule here: `shape` (whose inference reads the static
  type), `slice_update` and `linear` (in place / without per-call copies, for speed, with
  coremltools' slice solver), states (`read_state`, `coreml_update_state`), `silu`; weight
  decompression ops are materialised once with coremltools' own `materialized_val_inference`.
- `kernels="torch"` (the vision programs: SqueezeSAM, LongVU's DINO/SigLIP/projector): conv,
  attention and normalisation ops run in PyTorch (coremltools has no fast value inference for
  them); every op of such a program must have a rule here.

Precision: the decoder programs are fp16 (what the device runs); with `fp16=False` every fp16
cast is evaluated in fp32 and fp16 constants are widened, so this checks the graph, its
quantized weights and its state handling in fp32 math. With `fp16=True` (SqueezeSAM) values are
rounded to fp16 where the program casts to fp16 and each op computes in fp32 and rounds its
result back to its input's dtype. Neither is Apple's fp16 kernels or the Neural Engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


class _Val:
    """Stands in for a builtin value: value_inference reads `var._sym_val.val`."""

    __slots__ = ("val",)

    def __init__(self, val):
        self.val = val


def load_mil_program(package: Path):
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto import load as milproto

    spec = ct.utils.load_spec(str(package))
    weights = Path(package) / "Data" / "com.apple.CoreML" / "weights"
    return milproto.load(spec, specification_version=spec.specificationVersion, file_weights_dir=str(weights))


def _f32(x):
    """Widen fp16 (arrays and scalars) to fp32; leave everything else as coremltools gave it."""
    if isinstance(x, (np.ndarray, np.floating)) and x.dtype == np.float16:
        return x.astype(np.float32)
    if isinstance(x, (np.ndarray, np.bool_)) and x.dtype == bool and x.ndim == 0:
        return bool(x)  # numpy reductions refuse numpy bools as keepdims
    return x


def _silu(op, env):
    x = env(op.x)
    return x / (1.0 + np.exp(-x))


def _linear(op, env):
    """x @ W^T + b (coremltools' own inference transposes a non-contiguous view per call: slow)."""
    y = np.matmul(env(op.x), env(op.weight).T)
    return y if op.bias is None else y + env(op.bias)


def _cast(op, env):
    x = env(op.x)
    dtype = op.dtype.val
    if dtype in ("fp16", "fp32"):
        return x.astype(np.float32)  # fp32 math throughout (see module docstring)
    return x.astype(np.dtype(dtype.replace("fp", "float")) if dtype != "bool" else bool)


# ---- kernels="torch": the vision programs' ops in PyTorch ----


def _tensor(v, fp16: bool):
    """Numeric values as tensors: fp32, or fp16 kept where the program made them fp16 (fp16=True);
    strings, bools and integer attributes (pad types, modes, masks, shapes) stay as they are."""
    if torch.is_tensor(v):
        return v.float() if v.is_floating_point() and not (fp16 and v.dtype == torch.float16) else v
    arr = np.asarray(v)
    if arr.dtype.kind != "f":
        return v
    return torch.from_numpy(arr.astype(np.float16 if fp16 and arr.dtype == np.float16 else np.float32))


def _as_torch(v):
    return v if torch.is_tensor(v) else torch.as_tensor(np.asarray(v))


def _in_dtype_of(x, fn):
    """Compute `fn(x as fp32)` and round the result back to x's dtype (fp16 where the program casts)."""
    return fn(x.float()).to(x.dtype)


def _t_conv(op, a):
    x = a["x"]
    w = _as_torch(a["weight"]).to(x.dtype).float()
    b = None if a.get("bias") is None else _as_torch(a["bias"]).to(x.dtype).float()
    pad = [int(p) for p in a["pad"]]  # [top, bottom, left, right] for pad_type "custom"
    conv = lambda xf: F.conv2d(  # noqa: E731
        F.pad(xf, (pad[2], pad[3], pad[0], pad[1])),
        w,
        b,
        stride=tuple(int(s) for s in a["strides"]),
        dilation=tuple(int(d) for d in a["dilations"]),
        groups=int(a["groups"]),
    )
    return _in_dtype_of(x, conv)


def _t_upsample_bilinear(op, a):
    scale = (float(a["scale_factor_height"]), float(a["scale_factor_width"]))
    align = bool(a.get("align_corners", False))
    return _in_dtype_of(a["x"], lambda x: F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=align))


_TORCH_DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "int32": torch.int32, "bool": torch.bool}


def _t_dequantize(a, fp16: bool):
    """constexpr_affine_dequantize: (q - zero_point) * scale along `axis`, in fp32, then rounded
    to fp16 (fp16 programs store fp16 weights)."""
    q = torch.from_numpy(np.asarray(a["quantized_data"]).astype(np.float32))
    shape = [1] * q.ndim
    shape[int(a["axis"])] = -1
    zero = torch.from_numpy(np.asarray(a["zero_point"]).astype(np.float32)).reshape(shape)
    scale = torch.from_numpy(np.asarray(a["scale"]).astype(np.float32)).reshape(shape)
    w = (q - zero) * scale
    return w.half() if fp16 else w.half().float()


def _t_slice(op, a):
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


def _t_matmul(op, a):
    x, y = a["x"], a["y"]
    x = x.transpose(-1, -2) if bool(a.get("transpose_x", False)) else x
    y = y.transpose(-1, -2) if bool(a.get("transpose_y", False)) else y
    return torch.matmul(x, y)


def _t_gelu(op, a):
    approximate = "tanh" if str(a.get("mode", "EXACT")) == "TANH_APPROXIMATION" else "none"
    return F.gelu(a["x"], approximate=approximate)


def _t_layer_norm(op, a):
    x = a["x"]
    axes = len(np.asarray(a["axes"]))
    return F.layer_norm(x, x.shape[-axes:], _as_torch(a["gamma"]), _as_torch(a["beta"]), float(a["epsilon"]))


TORCH_OPS = {
    "add": lambda op, a: _as_torch(a["x"]) + _as_torch(a["y"]),
    "sub": lambda op, a: _as_torch(a["x"]) - _as_torch(a["y"]),
    "mul": lambda op, a: _as_torch(a["x"]) * _as_torch(a["y"]),
    "real_div": lambda op, a: _as_torch(a["x"]) / _as_torch(a["y"]),
    "relu": lambda op, a: torch.relu(a["x"]),
    "conv": _t_conv,
    "upsample_bilinear": _t_upsample_bilinear,
    "concat": lambda op, a: torch.cat(
        [_as_torch(v).to(_as_torch(a["values"][0]).dtype) for v in a["values"]], dim=int(a["axis"])
    ),
    "reshape": lambda op, a: a["x"].reshape([int(s) for s in np.asarray(a["shape"])]),
    "transpose": lambda op, a: a["x"].permute([int(p) for p in np.asarray(a["perm"])]),
    "layer_norm": _t_layer_norm,
    "linear": lambda op, a: F.linear(
        a["x"], _as_torch(a["weight"]), None if a.get("bias") is None else _as_torch(a["bias"])
    ),
    "matmul": _t_matmul,
    "softmax": lambda op, a: torch.softmax(a["x"], dim=int(a["axis"])),
    "gelu": _t_gelu,
    "slice_by_index": _t_slice,
}


class MILInterpreter:
    """run(inputs) -> outputs for a program's main function; states persist between runs.

    kernels="numpy": coremltools' value inference (decoders); outputs are numpy arrays.
    kernels="torch": PyTorch rules (vision programs); outputs are fp32 tensors.
    fp16: round values where the program casts to fp16 (else fp32 math throughout)."""

    def __init__(self, package: Path, kernels: str = "numpy", fp16: bool = False):
        if kernels not in ("numpy", "torch"):
            raise ValueError(f"kernels must be 'numpy' or 'torch', not {kernels!r}")
        if fp16 and kernels != "torch":
            raise ValueError("fp16 rounding is implemented for kernels='torch' only")
        self.program = load_mil_program(Path(package))
        self.fn = self.program.functions["main"]
        self.kernels, self.fp16 = kernels, fp16
        self.states: dict[str, np.ndarray] = {}
        self.consts: dict[str, object] = {}
        for op in self.fn.operations:  # weights decompressed once
            if kernels == "torch" and op.op_type == "constexpr_affine_dequantize":
                args = {k: v.val for k, v in op.inputs.items()}
                self.consts[op.outputs[0].name] = _t_dequantize(args, fp16)
            elif op.op_type.startswith("constexpr_"):
                self.consts[op.outputs[0].name] = self._const(op.materialized_val_inference())
            elif op.op_type == "const":
                self.consts[op.outputs[0].name] = self._const(op.outputs[0].val)
        # last op index reading each var; vars dead after op i (outputs are never freed)
        self.last_use: dict[str, int] = {}
        for i, op in enumerate(self.fn.operations):
            for var in _input_vars(op):
                self.last_use[var.name] = i
        keep = {v.name for v in self.fn.outputs}
        self.dead_after: list[list[str]] = [[] for _ in self.fn.operations]
        for name, i in self.last_use.items():
            if name not in keep and name not in self.consts:
                self.dead_after[i].append(name)
        self.rules = {
            "read_state": lambda op, env: self.states[op.input.name],  # never written in place (see _slice_update)
            "linear": _linear,
            "coreml_update_state": self._update_state,
            "silu": _silu,
            # coremltools' shape value inference reads the static (symbolic) type; use the runtime shape
            "shape": lambda op, env: np.array(np.shape(env(op.x)), dtype=np.int32),
            "cast": self._cast,
            # reps is int32 in MIL; computed from shapes it can reach here as a float array
            "tile": lambda op, env: np.tile(env(op.x), np.asarray(env(op.reps)).astype(np.int64)),
        }
        self.reset()

    def _const(self, value):
        return _tensor(value, self.fp16) if self.kernels == "torch" else _f32(value)

    def _cast(self, op, env):
        x, dtype = env(op.x), op.dtype.val
        if self.kernels == "torch":
            return x.to(_TORCH_DTYPES[dtype] if self.fp16 or dtype != "fp16" else torch.float32)
        return _cast(op, env)

    def reset(self) -> None:
        for name, var in self.fn.inputs.items():
            if "state" in type(var.sym_type).__name__ or hasattr(var.sym_type, "wrapped_type"):
                t = var.sym_type.wrapped_type()
                self.states[name] = np.zeros([int(d) for d in t.get_shape()], dtype=np.float32)

    def _update_state(self, op, env):
        value = np.asarray(env(op.value), dtype=np.float32)
        self.states[op.state.name] = value
        return value

    def run(self, inputs: dict) -> dict:
        torch_kernels = self.kernels == "torch"
        convert = (lambda v: _tensor(v, self.fp16)) if torch_kernels else _f32
        values: dict[str, object] = {k: convert(v) for k, v in inputs.items()}

        def env(var):
            if isinstance(var, (list, tuple)):
                return [env(v) for v in var]
            if var.name in values:
                return values[var.name]
            return self.consts[var.name] if var.name in self.consts else var.val

        for i, op in enumerate(self.fn.operations):
            out = op.outputs[0].name if op.outputs else None
            if out in self.consts:
                continue
            if torch_kernels:
                values[out] = convert(self._torch_op(op, env))
            elif op.op_type == "slice_update":
                values[out] = self._slice_update(op, env, i)
            elif op.op_type in self.rules:
                values[out] = self.rules[op.op_type](op, env)
            else:
                for var, val in zip(op.outputs, self._value_inference(op, env)):
                    values[var.name] = val
            for name in self.dead_after[i]:  # free intermediates (a decode step touches GBs otherwise)
                values.pop(name, None)
        if torch_kernels:
            return {v.name: values[v.name].float() for v in self.fn.outputs}
        return {v.name: np.asarray(values[v.name]) for v in self.fn.outputs}

    def _torch_op(self, op, env):
        if op.op_type == "cast":
            return self._cast(op, env)
        if op.op_type not in TORCH_OPS:
            raise NotImplementedError(f"MIL op {op.op_type} has no interpreter rule")
        args = {k: (None if v is None else env(v)) for k, v in op.inputs.items()}
        return TORCH_OPS[op.op_type](op, args)

    def _slice_update(self, op, env, index: int):
        """coremltools' slice_update semantics (its own slice solver), in place when `x` is dead
        afterwards and not a state: its value inference copies the whole KV cache per call."""
        from coremltools.converters.mil.mil.ops.defs._utils import solve_slice_by_index_slice

        x = env(op.x)
        owned = op.x.name not in self.consts and op.x.name not in self.fn.inputs
        if not (owned and self.last_use[op.x.name] == index and all(x is not s for s in self.states.values())):
            x = np.array(x, copy=True)
        opt = lambda v: None if v is None else env(v)  # noqa: E731
        slices = solve_slice_by_index_slice(
            x.shape,
            env(op.begin),
            env(op.end),
            opt(op.stride),
            opt(op.begin_mask),
            opt(op.end_mask),
            opt(op.squeeze_mask),
        )
        x[slices] = np.reshape(env(op.update), x[slices].shape)
        return x

    @staticmethod
    def _value_inference(op, env) -> list:
        """Feed the op's inputs as values (and their runtime shapes and dtypes as types: the
        program's types carry symbolic dims and fp16), call value_inference, restore the op."""
        from coremltools.converters.mil.mil import types

        saved = []
        for var in _input_vars(op):
            saved.append((var, var._sym_val, var._sym_type))
            value = env(var)
            var._sym_val = _Val(value)
            if isinstance(value, np.ndarray) and types.is_tensor(var._sym_type):
                var._sym_type = types.tensor(types.numpy_type_to_builtin_type(value.dtype), value.shape)
        try:
            result = op.value_inference()
        finally:
            for var, val, sym_type in saved:
                var._sym_val, var._sym_type = val, sym_type
        if not isinstance(result, (tuple, list)) or len(op.outputs) == 1:
            result = [result]
        return [_f32(getattr(r, "val", r)) for r in result]


def _input_vars(op):
    for v in op.inputs.values():
        yield from (v if isinstance(v, (list, tuple)) else [v])
