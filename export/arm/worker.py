"""Runs an artifact's cases inside the emulated aarch64 Python (export/arm/lane.py).

Standalone on purpose: the emulated interpreter sees only the lane's aarch64 wheels (torch,
executorch, onnxruntime, numpy), not Handheld. Usage: `python worker.py JOB_DIR`, where JOB_DIR
holds job.json ({"program", "method", "cases", ...}) and inputs.npz (case i's inputs as "i/j");
the cases run in order on one loaded program (an LLM's KV cache carries over from step to step),
and outputs.npz ("i/k") and result.json (CPU features, timings) are written beside them. A
.pte runs in ExecuTorch, an .onnx in onnxruntime's CPU provider.
"""

import json
import struct
import sys
import time
from pathlib import Path

# aarch64 auxv: AT_HWCAP = 16, AT_HWCAP2 = 26; the bits the phone kernel families need
FEATURES = {
    "asimddp": (16, 1 << 20),
    "sve": (16, 1 << 22),
    "i8mm": (26, 1 << 13),
    "bf16": (26, 1 << 14),
    "sme": (26, 1 << 23),
}


def cpu_features() -> dict:
    """What the (emulated) CPU tells programs it can do: the kernels XNNPACK/KleidiAI pick follow these."""
    raw = Path("/proc/self/auxv").read_bytes()
    aux = dict(struct.iter_unpack("<QQ", raw[: len(raw) // 16 * 16]))
    return {name: bool(aux.get(key, 0) & bit) for name, (key, bit) in FEATURES.items()}


def _executorch(job: dict, z, out: dict, times: dict) -> str:
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama:: ops)
    import executorch.kernels.quantized  # noqa: F401  (quantized_decomposed:: ops)
    import torch
    from executorch.runtime import Runtime

    times["imported"] = time.perf_counter()
    method = Runtime.get().load_program(Path(job["program"])).load_method(job["method"])
    times["loaded"] = time.perf_counter()
    for i in range(job["cases"]):
        inputs = [torch.from_numpy(z[f"{i}/{j}"]) for j in range(job["inputs_per_case"][i])]
        for k, value in enumerate(method.execute(inputs)):
            out[f"{i}/{k}"] = value.numpy()
    return f"torch {torch.__version__}"


def _onnx(job: dict, z, out: dict, times: dict) -> str:
    """onnxruntime's aarch64 CPU provider; a decoder's cache is state: each step's `present`
    outputs become the next step's `past` inputs (zeros first), as the host's bound buffers are."""
    import numpy as np
    import onnxruntime as ort

    times["imported"] = time.perf_counter()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(job["program"], options, providers=["CPUExecutionProvider"])
    times["loaded"] = time.perf_counter()
    state = {past: np.zeros(job["kv_shape"], np.float32) for past, _ in job.get("state", [])}
    names = [o.name for o in session.get_outputs()]
    for i in range(job["cases"]):
        feed = {name: z[f"{i}/{j}"] for j, name in enumerate(job["input_names"])}
        results = dict(zip(names, session.run(None, {**feed, **state})))
        for past, present in job.get("state", []):
            state[past] = results[present]
        for k, name in enumerate(job["output_names"]):
            out[f"{i}/{k}"] = results[name]
    return f"onnxruntime {ort.__version__}"


def main(job_dir: Path) -> None:
    import numpy as np

    times = {"start": time.perf_counter()}
    job = json.loads((job_dir / "job.json").read_text())
    out: dict = {}
    with np.load(job_dir / "inputs.npz") as z:
        runtime = (_onnx if job["program"].endswith(".onnx") else _executorch)(job, z, out, times)
    done = time.perf_counter()
    np.savez(job_dir / "outputs.npz", **out)
    result = {
        "cpu_features": cpu_features(),
        "import_s": round(times["imported"] - times["start"], 2),
        "load_s": round(times["loaded"] - times["imported"], 2),
        "run_s": round(done - times["loaded"], 2),
        "runtime": runtime,
    }
    (job_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
