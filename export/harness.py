"""Per-artifact-kind entry points: parity checks, benchmarks and demo steps.

Model families register functions here by artifact kind (the manifest's `kind`), as
"module:function" strings resolved on first use, so `handheld parity DIR` and
`handheld bench DIR` dispatch on the manifest and importing the CLI stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from runtime.registry import Registry

# kind -> "module:function"; parity(dir, **opts) -> dict with "passed": bool
PARITY = Registry[str]("artifact kind for parity")
# kind -> "module:function"; bench(dir, **opts) -> dict (also written as JSON)
BENCH = Registry[str]("artifact kind for bench")
# name -> "module:function"; step(out_root: Path) -> list[str] summary lines; run in order
DEMO_STEPS = Registry[str]("demo step")

PARITY.register("llm")("export.llm.parity:check_artifact")
BENCH.register("llm")("export.llm.bench:bench_artifact")
DEMO_STEPS.register("10-llm")("export.llm.demo:run_demo")
PARITY.register("longvu")("export.longvu.parity:check_artifact")
BENCH.register("longvu")("export.longvu.bench:bench_artifact")
DEMO_STEPS.register("30-longvu")("export.longvu.demo:run_demo")
PARITY.register("sam")("export.sam.parity:check_artifact")
BENCH.register("sam")("export.sam.bench:bench_artifact")
DEMO_STEPS.register("20-sam")("export.sam.demo:run_demo")
DEMO_STEPS.register("40-bundle")("export.bundle.demo:run_demo")


def resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
