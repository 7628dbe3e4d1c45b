"""The Runner protocol: load an artifact folder, run named inputs -> named outputs.

Runners are looked up by the manifest's `backend`; each backend module registers itself.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import torch

from runtime.manifest import load_manifest
from runtime.registry import Registry


class Runner(Protocol):
    manifest: dict

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


# backend name -> "module:class"; the class takes (artifact_dir, manifest, **options)
RUNNERS = Registry[str]("runtime backend")
RUNNERS.register("executorch")("runtime.executorch_runner:ExecuTorchRunner")
RUNNERS.register("onnx")("runtime.onnx_runner:OnnxRunner")
RUNNERS.register("coreml")("runtime.coreml_runner:CoreMLRunner")


def open_runner(artifact: Path, **options) -> Runner:
    """Verify the artifact's checksums, then load it with the runner for its backend."""
    manifest = load_manifest(artifact, verify=True)
    module, _, name = RUNNERS.get(manifest["backend"]).partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(Path(artifact), manifest, **options)
