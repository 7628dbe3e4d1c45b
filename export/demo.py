"""`handheld demo`: run every registered demo step, time each, end with one summary table.

A step is `step(out_root: Path) -> StepReport`: the detail lines it prints, one `DemoRow`
per model x backend it produced (parity verdict, size, speed, what the model answered), and
the host bench records it wrote. A step that fails is reported and the demo goes on with the
next one (a later step that needs its output says so itself); the exit code is then 1.
The summary is printed, written to `OUT/demo-summary.json` and put at the top of the HTML
report (`OUT/report/report.html`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import HandheldError, error_line

SUMMARY_JSON = "demo-summary.json"
RESULT_WIDTH = 60  # characters of an answer shown in the terminal table (the JSON keeps it whole)


@dataclass(frozen=True)
class DemoRow:
    model: str
    backend: str
    parity: str  # PASS | FAIL | not checked | FAILED (the step failed)
    size_mb: float | None
    speed: str
    result: str  # the LLM's answer, the mask, the video answer


@dataclass
class StepReport:
    lines: list[str] = field(default_factory=list)
    rows: list[DemoRow] = field(default_factory=list)
    bench_records: list[Path] = field(default_factory=list)


def verdict(parity: dict | None) -> str:
    if parity is None:
        return "not checked"
    return "PASS" if parity["passed"] else "FAIL"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(rows: list[DemoRow]) -> list[str]:
    header = ("model", "backend", "parity", "MB", "speed", "result")
    cells = [
        (
            r.model,
            r.backend,
            r.parity,
            "-" if r.size_mb is None else f"{r.size_mb:.1f}",
            r.speed or "-",
            _clip(r.result, RESULT_WIDTH),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(c) for c in cells]


def run_demo(out_root: Path) -> int:
    from export.harness import DEMO_STEPS, resolve
    from export.report import render_report

    out_root = Path(out_root)
    rows: list[DemoRow] = []
    records: list[Path] = []
    timings: list[tuple[str, float, str]] = []
    for name in DEMO_STEPS.names():
        print(f"\n== demo step {name} ==", flush=True)
        start = time.perf_counter()
        try:
            step = resolve(DEMO_STEPS.get(name))(out_root)
            status = "ok"
        except HandheldError as err:
            step = StepReport(
                lines=[f"{name}: FAILED: {err}"], rows=[DemoRow(name, "-", "FAILED", None, "", err.problem)]
            )
            status = "FAILED"
        except Exception as err:  # a bug in one step: report it, run the others (--verbose: traceback)
            import traceback

            if os.environ.get("HANDHELD_VERBOSE") == "1":
                traceback.print_exc()
            problem = f"unexpected {type(err).__name__}: {error_line(err, 200)}"
            step = StepReport(
                lines=[f"{name}: FAILED ({problem}; a Handheld bug: re-run with --verbose for the traceback)"],
                rows=[DemoRow(name, "-", "FAILED", None, "", problem)],
            )
            status = "FAILED"
        seconds = time.perf_counter() - start
        timings.append((name, seconds, status))
        print("\n".join(step.lines))
        print(f"== {name}: {status} in {_minutes(seconds)} ==", flush=True)
        rows += step.rows
        records += step.bench_records

    summary = {
        "steps": [{"step": n, "seconds": round(s, 1), "status": st} for n, s, st in timings],
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    report = []
    if records:
        report = render_report(records, out_root / "report", summary=summary)
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")

    print("\n== Handheld demo summary ==")
    for n, s, st in timings:
        print(f"  {n:<12} {_minutes(s):>9}  {st}")
    print(f"  {'total':<12} {_minutes(sum(s for _, s, _ in timings)):>9}")
    print()
    print("\n".join(format_table(rows)))
    print()
    print(
        f"wrote {out_root / SUMMARY_JSON}" + (f" and {report[1]}" if report else " (no bench records: no HTML report)")
    )
    failed = [n for n, _, st in timings if st != "ok"] + [
        f"{r.model} [{r.backend}]" for r in rows if r.parity == "FAIL"
    ]
    if failed:
        print(f"handheld: demo finished with failures: {', '.join(failed)}")
        return 1
    return 0
