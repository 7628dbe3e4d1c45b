"""The phone part of `make demo`: bundle the demo artifacts for both apps, verify them, and render
the benchmark report from the host results of all three models.

Runs after the model steps (10-llm, 20-sam, 30-longvu) and reads what they left in `out_root`.
"""

from __future__ import annotations

import json
from pathlib import Path

from export.demo import DemoRow, StepReport
from runtime.errors import HandheldError

# demo step outputs (export/llm/demo.py, export/sam/demo.py, export/longvu/demo.py)
LLM_DIR, SAM_DIR, LONGVU_DIR = "llm-executorch", "sam", "longvu-executorch"
BENCH_JSON = {"llm": "llm-executorch.bench.json", "longvu": "longvu-executorch.bench.json"}
TARGET_ARTIFACTS = {
    "android": (LLM_DIR, f"{SAM_DIR}/executorch", LONGVU_DIR),
    "ios": (LLM_DIR, f"{SAM_DIR}/coreml", LONGVU_DIR),
}


def _sam_bench(folder: Path) -> dict:
    """The SqueezeSAM step prints its bench but keeps no JSON: measure once more (seconds)."""
    from export.sam.bench import bench_artifact

    return bench_artifact(folder, threads=(2,), runs=3, show=False)  # a record, not a table


def host_results(root: Path, out: Path) -> list[Path]:
    """Host bench records (bench.schema.json) for the three demo models, written under `out`."""
    from export.device.results import host_record, write_record

    raws = {}  # kind -> (the family bench's own result, its artifact folder)
    for kind, name in BENCH_JSON.items():
        if (root / name).is_file():
            raws[kind] = (json.loads((root / name).read_text()), root / name.removesuffix(".bench.json"))
    raws["sam"] = (_sam_bench(root / SAM_DIR / "executorch"), root / SAM_DIR / "executorch")
    return [write_record(host_record(raw, folder), out / f"{kind}.json") for kind, (raw, folder) in raws.items()]


def run_demo(out_root: Path) -> StepReport:
    from export.bundle.bundle import BundleConfig, build_bundle
    from export.bundle.verify import verify_bundle

    root = Path(out_root)
    report = StepReport(["Phone bundles (android_demo/, ios_demo/ read them; see their READMEs to build the apps):"])
    for target, names in TARGET_ARTIFACTS.items():
        out = root / "bundles" / target
        try:
            build_bundle(BundleConfig(target=target, out=out, artifacts=tuple(root / n for n in names)))
            summary = verify_bundle(out.with_name(f"{target}.zip"))
            size = summary["size_bytes"] / 2**20
            report.lines.append(f"  {target:8} {out}.zip: {', '.join(summary['models'])}, {size:.0f} MiB, verified")
            report.rows.append(
                DemoRow(
                    f"bundle {target}",
                    target,
                    "verified",
                    summary["size_bytes"] / 1e6,
                    "",
                    ", ".join(summary["models"]),
                )
            )
        except HandheldError as err:
            report.lines.append(f"  {target:8} not bundled: {err.problem}")
            report.rows.append(DemoRow(f"bundle {target}", target, "FAILED", None, "", err.problem))
    report.bench_records = host_results(root, root / "bench")
    report.lines.append(
        f"  {len(report.bench_records)} host bench records in {root / 'bench'} (the report is written at the end)"
    )
    return report
