"""Evaluate a saved .mlpackage's MIL program op by op on Linux, with coremltools' own value inference.

Apple's CoreML runtime exists only on macOS. What Linux can still do is load the program the
package contains (the protobuf + weight blob, via coremltools' milproto loader) and run every
operation through the `value_inference` coremltools itself defines for it (numpy math, the
code its constant folding uses). A few ops (`shape`, whose inference reads the static type; `slice_update` and `linear`, done
in place / without per-call copies for speed, with coremltools' slice solver) have no value inference and get a rule here:
states (`read_state`, `coreml_update_state`), `silu`, and the weight decompression ops
(materialised once, with coremltools' own `materialized_val_inference`).

Precision: the program is fp16 (what the device runs); here every fp16 cast is evaluated in
fp32 and fp16 constants are widened, so this checks the graph, its quantized weights and its
state handling in fp32 math, not Apple's fp16 kernels or the Neural Engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


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


class MILInterpreter:
    """run(inputs) -> outputs for a stateful program; states persist between runs."""

    def __init__(self, package: Path):
        self.program = load_mil_program(Path(package))
        self.fn = self.program.functions["main"]
        self.states: dict[str, np.ndarray] = {}
        self.consts: dict[str, np.ndarray] = {}
        for op in self.fn.operations:  # weights decompressed once
            if op.op_type.startswith("constexpr_"):
                self.consts[op.outputs[0].name] = _f32(op.materialized_val_inference())
            elif op.op_type == "const":
                self.consts[op.outputs[0].name] = _f32(op.outputs[0].val)
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
            "cast": _cast,
            # reps is int32 in MIL; computed from shapes it can reach here as a float array
            "tile": lambda op, env: np.tile(env(op.x), np.asarray(env(op.reps)).astype(np.int64)),
        }
        self.reset()

    def reset(self) -> None:
        for name, var in self.fn.inputs.items():
            if "state" in type(var.sym_type).__name__ or hasattr(var.sym_type, "wrapped_type"):
                t = var.sym_type.wrapped_type()
                self.states[name] = np.zeros([int(d) for d in t.get_shape()], dtype=np.float32)

    def _update_state(self, op, env):
        value = np.asarray(env(op.value), dtype=np.float32)
        self.states[op.state.name] = value
        return value

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values: dict[str, object] = {k: _f32(v) for k, v in inputs.items()}

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
            if op.op_type == "slice_update":
                values[out] = self._slice_update(op, env, i)
            elif op.op_type in self.rules:
                values[out] = self.rules[op.op_type](op, env)
            else:
                for var, val in zip(op.outputs, self._value_inference(op, env)):
                    values[var.name] = val
            for name in self.dead_after[i]:  # free intermediates (a decode step touches GBs otherwise)
                values.pop(name, None)
        return {v.name: np.asarray(values[v.name]) for v in self.fn.outputs}

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
