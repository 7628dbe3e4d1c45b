"""Load one segmenter model file as a plain function: numpy inputs in, numpy outputs out.

Used by runtime/segment.py (the predictor) and export/sam/bench.py; keyed by the manifest's
backend. CoreML prediction needs Apple's runtime (macOS); elsewhere loading it fails clearly.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from runtime.errors import HandheldError
from runtime.registry import Registry

Forward = Callable[..., list[np.ndarray]]  # forward(*inputs float32 arrays) -> list of outputs

LOADERS = Registry[Callable[..., Forward]]("segmenter backend")  # (path, threads=1) -> Forward


@LOADERS.register("executorch")
def load_executorch(path: Path, threads: int = 1) -> Forward:
    import executorch.kernels.quantized  # noqa: F401  (quantize ops outside the delegate, if any)
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    from runtime.executorch_runner import native_stderr_silenced

    with native_stderr_silenced():  # the bindings' log lines (cpuinfo, threadpool)
        _unsafe_reset_threadpool(threads)  # XNNPACK's pool; torch's OpenMP is pinned by OMP_NUM_THREADS

    try:
        with native_stderr_silenced():
            method = Runtime.get().load_program(str(path)).load_method("forward")
    except Exception as err:
        raise HandheldError(
            f"ExecuTorch could not load {path} ({type(err).__name__})", "re-export it with this Handheld version"
        ) from None

    def forward(*inputs):
        return [np.asarray(o) for o in method.execute([torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])]

    return forward


@LOADERS.register("onnx")
def load_onnx(path: Path, threads: int = 1) -> Forward:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise HandheldError(
            f"onnxruntime could not load {path} ({type(err).__name__})", "re-export it with this Handheld version"
        ) from None
    names = [i.name for i in session.get_inputs()]

    def forward(*inputs):
        return session.run(None, dict(zip(names, inputs)))

    return forward


@LOADERS.register("coreml")
def load_coreml(path: Path, threads: int = 1) -> Forward:
    if platform.system() != "Darwin":
        raise HandheldError(
            f"cannot run {path.name} here: CoreML prediction needs macOS (Apple's runtime)",
            "run this on a Mac, or use the executorch/onnx artifact on Linux",
        )
    import coremltools as ct

    model = ct.models.MLModel(str(path))
    names = [i.name for i in model.get_spec().description.input]

    def forward(*inputs):
        out = model.predict(dict(zip(names, inputs)))
        return [np.asarray(v) for v in out.values()]

    return forward


def load_forward(backend: str, path: Path, threads: int = 1) -> Forward:
    return LOADERS.get(backend)(Path(path), threads=threads)
