"""Measuring a model alone: one function run in a fresh Python process.

Every benchmark (`handheld bench` on an LLM, SqueezeSAM or LongVU artifact, and the
onnxruntime-genai baseline) times each model x thread count in its own interpreter, so that its
peak RSS, its thread pools and its warm caches belong to that model only. The function is named
"module:function" and returns a JSON-able dict; it sets its own thread count (OpenMP is pinned
to one thread per pool here so that nothing outside the runtime's own pool competes).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from runtime.errors import HandheldError

ROOT = Path(__file__).resolve().parents[1]  # the worker imports Handheld from the checkout
_MARK = "HANDHELD-WORKER-RESULT "


def run_worker(target: str, *args, what: str, fix: str) -> dict:
    """`target(*args)` in a fresh Python process; its dict. Paths are passed resolved, so the
    worker's working directory does not matter. A worker that fails or prints no result is a
    HandheldError naming `what`, with the worker's last error lines and `fix`."""
    args = tuple(str(Path(a).resolve()) if isinstance(a, Path) else a for a in args)
    if not all(a is None or isinstance(a, (str, int, float, bool)) for a in args):
        raise TypeError(f"worker arguments must be str, int, float, bool or None: {args!r}")
    code = f"import json; from export.harness import resolve; print({_MARK!r} + json.dumps(resolve({target!r})(*{args!r})))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    results = [line[len(_MARK) :] for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode or not results:
        lines = done.stderr.strip().splitlines()
        tail = " / ".join(lines[-2:]) if lines else f"exit status {done.returncode}, no error output"
        raise HandheldError(f"benchmark of {what} failed: {tail}", fix)
    return json.loads(results[-1])


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB. VmHWM belongs to the address space created at exec,
    unlike ru_maxrss, which a worker started from a big parent inherits on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
