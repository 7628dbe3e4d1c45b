"""Runs an ExecuTorch program's cases inside the emulated aarch64 Python (export/arm/lane.py).

Standalone on purpose: the emulated interpreter sees only the lane's aarch64 wheels (torch,
executorch, numpy), not Handheld. Usage: `python worker.py JOB_DIR`, where JOB_DIR holds
job.json ({"program", "method", "cases"}) and inputs.npz (case i's inputs as "i/j"); the cases
run in order on one loaded method (an LLM's KV cache carries over from step to step), and
outputs.npz ("i/k") and result.json (CPU features, timings) are written beside them.
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


def main(job_dir: Path) -> None:
    start = time.perf_counter()
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama:: ops)
    import executorch.kernels.quantized  # noqa: F401  (quantized_decomposed:: ops)
    import numpy as np
    import torch
    from executorch.runtime import Runtime

    imported = time.perf_counter()
    job = json.loads((job_dir / "job.json").read_text())
    program = Runtime.get().load_program(Path(job["program"]))
    method = program.load_method(job["method"])
    loaded = time.perf_counter()
    out = {}
    with np.load(job_dir / "inputs.npz") as z:
        for i in range(job["cases"]):
            inputs = [torch.from_numpy(z[f"{i}/{j}"]) for j in range(job["inputs_per_case"][i])]
            for k, value in enumerate(method.execute(inputs)):
                out[f"{i}/{k}"] = value.numpy()
    done = time.perf_counter()
    np.savez(job_dir / "outputs.npz", **out)
    result = {
        "cpu_features": cpu_features(),
        "import_s": round(imported - start, 2),
        "load_s": round(loaded - imported, 2),
        "run_s": round(done - loaded, 2),
        "torch": torch.__version__,
    }
    (job_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
