"""Run a .pte through ExecuTorch's Python runtime (XNNPACK + portable/custom/quantized kernels)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from runtime.errors import HandheldError


def set_threads(n: int) -> None:
    """XNNPACK's thread pool size (torch's own OpenMP threads are pinned by OMP_NUM_THREADS=1)."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    with native_stderr_silenced():  # "Resetting threadpool", cpuinfo's probing
        _unsafe_reset_threadpool(n)


@contextlib.contextmanager
def native_stderr_silenced():
    """ExecuTorch's kernels log an info line to fd 2 on every attention call ("No temp
    allocator provided"), and its Python bindings hand their log lines (cpuinfo, threadpool
    resets) to Python's sys.stderr: keep the terminal readable. HANDHELD_NATIVE_LOGS=1 or
    --verbose shows them. Failures still surface: execute() raises a Python exception."""
    if os.environ.get("HANDHELD_NATIVE_LOGS") or os.environ.get("HANDHELD_VERBOSE") == "1":
        yield
        return
    import sys

    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    sink = open(os.devnull, "w")
    try:
        os.dup2(devnull, 2)
        with contextlib.redirect_stderr(sink):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        sink.close()


class ExecuTorchRunner:
    def __init__(self, artifact: Path, manifest: dict, method: str = "forward", threads: int | None = None):
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama:: kernels)
        import executorch.kernels.quantized  # noqa: F401  (quantized_decomposed:: kernels)
        from executorch.runtime import Runtime

        self.manifest = manifest
        self.input_names = [spec["name"] for spec in manifest["inputs"]]
        self.output_names = [spec["name"] for spec in manifest["outputs"]]
        if threads:
            set_threads(threads)
        path = Path(artifact) / manifest["model_file"]
        try:
            with native_stderr_silenced():
                self.program = Runtime.get().load_program(str(path))
                self.method = self.program.load_method(method)
        except Exception as err:
            raise HandheldError(
                f"ExecuTorch could not load {path} ({type(err).__name__}: {str(err)[:200]})",
                "re-export the artifact with this Handheld/ExecuTorch version",
            ) from None

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with native_stderr_silenced():
            outputs = self.method.execute([inputs[name] for name in self.input_names])
        return dict(zip(self.output_names, outputs))
