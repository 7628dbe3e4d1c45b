"""Run an ONNX LLM artifact through onnxruntime behind the Runner contract.

The graph takes the KV cache as past_* inputs and returns present_* outputs (see
export/llm/wrapper_onnx.py); this runner keeps them between calls, so callers see the same
`run({"tokens": [1, S], "input_pos": [1]}) -> {"logits": [1, vocab]}` as the ExecuTorch
runner. input_pos below the cached length rewinds (the cache is cut to input_pos, as the
static cache ignores stale entries); a gap beyond it is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from export.errors import HandheldError


class OnnxRunner:
    def __init__(self, artifact: Path, manifest: dict, threads: int | None = None):
        import onnxruntime as ort

        self.manifest = manifest
        graph = manifest["onnx_graph"]
        self.past_names, self.present_names = graph["past"], graph["present"]
        self.kv_shape = graph["kv_shape"]  # [1, n_kv_heads, 0, head_dim]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        path = Path(artifact) / manifest["model_file"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise HandheldError(
                f"onnxruntime could not load {path} ({type(err).__name__}: {str(err)[:200]})",
                "re-export the artifact with this Handheld/onnxruntime version",
            ) from None
        self.output_names = ["logits", *self.present_names]
        self.reset()

    @staticmethod
    def _ortvalue(a: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a))

    def reset(self) -> None:
        empty = np.zeros(self.kv_shape, dtype=np.float32)
        self.cache: list = [empty] * len(self.past_names)  # numpy arrays or OrtValues
        self.length = 0

    def _cut(self, pos: int) -> None:
        if pos == self.length:
            return
        if pos > self.length:
            raise HandheldError(
                f"input_pos {pos} skips past the {self.length} cached positions",
                "feed tokens in order (prefill at 0, then one position after another)",
            )
        self.cache = [_numpy(c)[:, :, :pos] for c in self.cache]
        self.length = pos

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = np.ascontiguousarray(torch.as_tensor(inputs["tokens"]).numpy().astype(np.int64))
        self._cut(int(inputs["input_pos"].reshape(-1)[0]))
        feeds = {"tokens": tokens, **dict(zip(self.past_names, self.cache))}
        feeds = {k: self._ortvalue(v) if isinstance(v, np.ndarray) else v for k, v in feeds.items()}
        outs = self.session.run_with_ort_values(self.output_names, feeds)
        self.cache = list(outs[1:])  # stay OrtValues: no copy into numpy between decode steps
        self.length += tokens.shape[1]
        return {"logits": torch.from_numpy(outs[0].numpy())}


def _numpy(v):
    return v if isinstance(v, np.ndarray) else v.numpy()
