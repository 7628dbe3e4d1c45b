"""Named tolerances and the one judge every parity check uses.

A table maps a metric's name to ("min" | "max", limit): the measured value must be at least
(min) or at most (max) the limit. Each check names its table beside the metrics it measures
(export/llm/parity.py, export/llm/lower_onnx.py, ...); the judging is written once, here."""

from __future__ import annotations

Tolerances = dict[str, tuple[str, float]]


def failures(metrics: dict, tolerances: Tolerances) -> list[str]:
    """'metric=value (min|max limit)' for every metric outside its tolerance."""
    out = []
    for key, (kind, limit) in tolerances.items():
        value = metrics[key]
        if not (value >= limit if kind == "min" else value <= limit):
            out.append(f"{key}={value:.4g} ({kind} {limit})")
    return out


def judge(metrics: dict, tolerances: Tolerances) -> dict:
    """{"passed", "failures", "tolerances"}: what goes into a manifest's parity report."""
    missed = failures(metrics, tolerances)
    return {"passed": not missed, "failures": missed, "tolerances": tolerances}


def parity_report(reference: str, metrics: dict, tolerances: Tolerances) -> dict:
    """The parity report every check writes into its manifest: what the artifact was compared
    with, the numbers, and the verdict on them."""
    return {"reference": reference, "metrics": metrics, **judge(metrics, tolerances)}


def print_failures(report: dict) -> None:
    for f in report["failures"]:
        print(f"  out of tolerance: {f}")
