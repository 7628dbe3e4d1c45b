"""Run a CoreML LLM artifact (.mlpackage, stateful KV cache) behind the Runner contract.

macOS: Apple's runtime through coremltools (`MLModel.predict` with a state from `make_state`).
Elsewhere there is no CoreML runtime; the runner then says so and interprets the saved MIL
program op by op with coremltools' value inference (runtime/mil_interpreter.py): the same
numbers the graph and its quantized weights define, in fp32, slowly, not Apple's kernels.
Either way callers see `run({"tokens": [1, S], "input_pos": [1]}) -> {"logits": [1, vocab]}`;
the runner turns input_pos into the causal mask the program takes.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import torch

from runtime.errors import HandheldError

LINUX_NOTICE = (
    "CoreML prediction needs macOS (Apple's runtime); running the saved MIL program in coremltools' "
    "value inference instead (fp32 math, not Apple's fp16/Neural Engine kernels)"
)


def causal_mask(input_pos: int, seq_len: int) -> torch.Tensor:
    """[1, 1, S, input_pos + S] additive mask: query i (at input_pos + i) sees keys 0..input_pos + i."""
    t = input_pos + seq_len
    q_pos = input_pos + torch.arange(seq_len)[:, None]
    return torch.where(torch.arange(t)[None, :] <= q_pos, 0.0, float("-inf"))[None, None]


def coreml_runtime_available() -> bool:
    return platform.system() == "Darwin"


class CoreMLRunner:
    def __init__(self, artifact: Path, manifest: dict, threads: int | None = None, interpreter: bool | None = None):
        self.manifest = manifest
        self.max_seq_len = int(manifest["max_seq_len"])
        path = Path(artifact) / manifest["model_file"]
        use_interpreter = not coreml_runtime_available() if interpreter is None else interpreter
        try:
            if use_interpreter:
                from runtime.mil_interpreter import MILInterpreter

                print(LINUX_NOTICE, file=sys.stderr)
                self.interpreter = MILInterpreter(path)
                self.engine = "mil-interpreter"
            else:
                import coremltools as ct

                self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
                self.engine = "coreml"
        except HandheldError:
            raise
        except Exception as err:
            raise HandheldError(
                f"could not load {path} ({type(err).__name__}: {str(err)[:200]})",
                "re-export the artifact with this Handheld/coremltools version",
            ) from None
        self.reset()

    def reset(self) -> None:
        """A fresh (zero) KV cache; input_pos 0 also starts over without it (stale rows are masked)."""
        if self.engine == "coreml":
            self.state = self.model.make_state()
        else:
            self.interpreter.reset()

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = torch.as_tensor(inputs["tokens"]).to(torch.int32).numpy()
        pos, s = int(inputs["input_pos"].reshape(-1)[0]), tokens.shape[1]
        if pos + s >= self.max_seq_len:
            raise HandheldError(
                f"position {pos + s} is past the artifact's context {self.max_seq_len - 1}", "start a new conversation"
            )
        feeds = {"tokens": tokens, "causal_mask": causal_mask(pos, s).numpy().astype(np.float32)}
        if self.engine == "coreml":
            out = self.model.predict(feeds, state=self.state)
        else:
            out = self.interpreter.run(feeds)
        return {"logits": torch.from_numpy(np.asarray(out["logits"], dtype=np.float32)).reshape(1, -1)}
