"""Run an ONNX LLM artifact through onnxruntime behind the Runner contract.

The graph takes `tokens`, `input_pos` and the KV cache as fixed-size past_* buffers and returns
present_* (see export/llm/wrapper_onnx.py). `BoundKVSession` binds each present_* output to
its past_* buffer with an IOBinding, so onnxruntime writes new keys in place: a decode step
copies no cache and allocates nothing, as onnxruntime-genai runs its own models. Callers see
the ExecuTorch runner's `run({"tokens": [1, S], "input_pos": [1]}) -> {"logits": [1, vocab]}`;
a smaller input_pos rewinds, a gap beyond the cached length is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime.errors import HandheldError


def open_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise HandheldError(
            f"onnxruntime could not load {path} ({type(err).__name__}: {str(err)[:200]})",
            "re-export the artifact with this Handheld/onnxruntime version",
        ) from None


class BoundKVSession:
    """A decoder session whose cache inputs and outputs share preallocated buffers.

    run(first, pos): `first` is the graph's first input ([1, S] tokens or [1, S, dim] embeddings)
    at positions pos .. pos + S - 1 -> logits [vocab] (a copy)."""

    def __init__(self, session, past_names: list[str], present_names: list[str], kv_shape: list[int]):
        import onnxruntime as ort

        self.session, self.max_seq_len = session, int(kv_shape[2])
        self.first_name = session.get_inputs()[0].name
        self.binding = session.io_binding()
        self.cache = [np.zeros(kv_shape, dtype=np.float32) for _ in past_names]  # the OrtValues below view these
        for past, present, buf in zip(past_names, present_names, self.cache):
            value = ort.OrtValue.ortvalue_from_numpy(buf)
            self.binding.bind_ortvalue_input(past, value)
            self.binding.bind_ortvalue_output(present, value)
        vocab = session.get_outputs()[0].shape[-1]
        self.logits = np.zeros((1, vocab), dtype=np.float32)
        self.binding.bind_ortvalue_output(session.get_outputs()[0].name, ort.OrtValue.ortvalue_from_numpy(self.logits))
        self.length = 0

    def run(self, first: np.ndarray, pos: int) -> np.ndarray:
        s = first.shape[1]
        if pos > self.length:
            raise HandheldError(
                f"input_pos {pos} skips past the {self.length} cached positions",
                "feed tokens in order (prefill at 0, then one position after another)",
            )
        if pos + s > self.max_seq_len:
            raise HandheldError(
                f"positions {pos}..{pos + s - 1} exceed the artifact's {self.max_seq_len}-token context",
                "start a new conversation or re-export with a larger --max-seq-len",
            )
        self.binding.bind_cpu_input(self.first_name, np.ascontiguousarray(first))
        self.binding.bind_cpu_input("input_pos", np.array([pos], dtype=np.int64))
        self.session.run_with_iobinding(self.binding)
        self.length = pos + s
        return self.logits[0].copy()


class OnnxRunner:
    def __init__(self, artifact: Path, manifest: dict, threads: int | None = None):
        self.manifest = manifest
        graph = manifest["onnx_graph"]
        self.session = open_session(Path(artifact) / manifest["model_file"], threads)
        self.decoder = BoundKVSession(self.session, graph["past"], graph["present"], graph["kv_shape"])

    def reset(self) -> None:
        self.decoder.length = 0  # stale positions are never read

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = torch.as_tensor(inputs["tokens"]).numpy().astype(np.int64)
        logits = self.decoder.run(tokens, int(inputs["input_pos"].reshape(-1)[0]))
        return {"logits": torch.from_numpy(logits)[None]}
