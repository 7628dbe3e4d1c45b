"""Benchmark records: one JSON shape (export/bundle/schema/bench.schema.json) for every device.

A record is an envelope (kind, backend, model, device, runner, size, metrics, parity, hot spots)
around a list of metrics `{name, value, unit[, threads, variant, samples]}`. Host records keep
the family benchmark's own fields beside the envelope; device records are built from what the
runner or the app printed. Units come from the metric name's suffix (METRIC_UNITS).
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from export.bundle import contract
from runtime.errors import HandheldError
from runtime.manifest import load_manifest
from runtime.registry import Registry

# metric name suffix -> unit (the schema's enum)
METRIC_UNITS = {
    "_ms": "ms",
    "_tok_s": "tok/s",
    "_fps": "frames/s",
    "_frames_per_s": "frames/s",
    "_mb": "MiB",
    "_count": "count",
}
SIZE_KEYS = ("size_mb",)  # artifact sizes travel as size_bytes, not as metrics
# ETDump events that frame operators rather than being one
FRAMEWORK_EVENTS = {"OPERATOR_CALL", "DELEGATE_CALL", "Method::execute", "Method::init", "Program::load_method"}

# ExecuTorch's executor_runner: "%d inference took %f ms, avg %f ms"
RUNNER_TIMING = re.compile(r"(\d+) inference took ([0-9.]+) ms, avg ([0-9.]+) ms")
# ExecuTorch's LLM runners (llama_main, LlmModule.onStats): "PyTorchObserver {json}"
OBSERVER = re.compile(r"PyTorchObserver (\{.*\})")


def unit_of(name: str) -> str | None:
    return next((unit for suffix, unit in METRIC_UNITS.items() if name.endswith(suffix)), None)


def metric(name: str, samples: Iterable[float], **labels) -> dict:
    """A metric from per-iteration samples: value is their median, samples are kept."""
    samples = [float(s) for s in samples]
    unit = unit_of(name)
    if unit is None or not samples:
        raise ValueError(f"metric {name!r}: needs a unit suffix ({', '.join(METRIC_UNITS)}) and samples")
    return {"name": name, "value": statistics.median(samples), "unit": unit, **labels, "samples": samples}


KIND_NAMES = {"llm": "llm", "sam": "squeezesam", "longvu": "longvu"}


def model_name(manifest: dict, folder: Path) -> str:
    """A readable name: the manifest's model_name, else its checkpoint's file stem, else the family."""
    if isinstance(manifest.get("model_name"), str) and manifest["model_name"]:
        return manifest["model_name"]
    checkpoint = manifest.get("source_checkpoint")  # the LLM's
    if not checkpoint and isinstance(manifest.get("checkpoint"), dict):  # SqueezeSAM's {"path", "sha256"}
        checkpoint = manifest["checkpoint"].get("path")
    if isinstance(checkpoint, str) and checkpoint:
        return Path(checkpoint).stem
    return KIND_NAMES.get(manifest.get("kind"), Path(folder).name)


def artifact_size(manifest: dict, folder: Path) -> int:
    return sum((Path(folder) / rel).stat().st_size for rel in manifest["files"] if (Path(folder) / rel).is_file())


def envelope(manifest: dict, folder: Path, device: dict, runner: str, metrics: list[dict], **extra) -> dict:
    record = {
        "bench_schema_version": contract.BENCH_SCHEMA_VERSION,
        "kind": manifest["kind"],
        "backend": manifest["backend"],
        "model": model_name(manifest, folder),
        "device": device,
        "runner": runner,
        "size_bytes": artifact_size(manifest, folder),
        "metrics": metrics,
        "created_unix": int(time.time()),
        **extra,
    }
    if isinstance(manifest.get("parity"), dict):
        record["parity"] = manifest["parity"]
    return record


# --- host ------------------------------------------------------------------------------
# kind -> function(raw family bench result) -> metrics; kinds without one use _flat_metrics
HOST_METRICS: Registry[Callable[[dict], list]] = Registry("host bench adapter")


@HOST_METRICS.register("llm")
def _llm_host_metrics(raw: dict) -> list[dict]:
    """export/llm/bench.py: results.<variant>.by_threads.<t>.{prefill_tok_s, ...}"""
    out = []
    for variant, result in raw.get("results", {}).items():
        for threads, values in result.get("by_threads", {}).items():
            for name, value in values.items():
                if unit_of(name) and isinstance(value, (int, float)):
                    out.append(
                        {
                            "name": name,
                            "value": float(value),
                            "unit": unit_of(name),
                            "threads": int(threads),
                            "variant": variant,
                        }
                    )
    return out


@HOST_METRICS.register("sam")
def _sam_host_metrics(raw: dict) -> list[dict]:
    """export/sam/bench.py: rows of {model, threads, first_mask_ms, per_click_ms, peak_rss_mb}."""
    out = []
    for row in raw.get("rows", []):
        for name, value in row.items():
            if unit_of(name) and name not in SIZE_KEYS and isinstance(value, (int, float)):
                out.append(
                    {
                        "name": name,
                        "value": float(value),
                        "unit": unit_of(name),
                        "threads": int(row["threads"]),
                        "variant": row["model"],
                    }
                )
    return out


@HOST_METRICS.register("longvu")
def _longvu_host_metrics(raw: dict) -> list[dict]:
    """export/longvu/bench.py: by_threads.<t>.videos.<video>.{..._ms, ..._frames_per_s, counts}."""
    out = []
    for threads, run in raw.get("by_threads", {}).items():
        labels = {"threads": int(threads)}
        for video, values in run.get("videos", {}).items():
            for name, value in values.items():
                if unit_of(name) and isinstance(value, (int, float)):
                    out.append({"name": name, "value": float(value), "unit": unit_of(name), "variant": video, **labels})
            # tokens kept after each compression stage: the numbers LongVU is about
            for stage, count in values.get("counts", {}).items():
                out.append({"name": stage, "value": float(count), "unit": "count", "variant": video, **labels})
        if isinstance(run.get("peak_rss_mb"), (int, float)):
            out.append({"name": "peak_rss_mb", "value": float(run["peak_rss_mb"]), "unit": "MiB", **labels})
    return out


def _flat_metrics(raw: dict, prefix: str = "") -> list[dict]:
    """Every numeric leaf whose key has a unit suffix; the dotted path above it is the variant."""
    out = []
    for key, value in raw.items():
        if isinstance(value, dict):
            out += _flat_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and unit_of(key) and key not in SIZE_KEYS:
            entry = {"name": key, "value": float(value), "unit": unit_of(key)}
            if prefix:
                entry["variant"] = prefix.rstrip(".")
            if isinstance(raw.get("threads"), int):
                entry["threads"] = raw["threads"]
            out.append(entry)
    return out


def host_record(raw: dict, folder: Path) -> dict:
    """The family's host bench result with the envelope added beside its own fields."""
    manifest = load_manifest(folder, verify=False)
    kind = manifest["kind"]
    metrics = HOST_METRICS.get(kind)(raw) if kind in HOST_METRICS else _flat_metrics(raw)
    host = {"type": "host", "id": "localhost", "name": _host_name(), "os": _host_os()}
    record = envelope(manifest, folder, host, "handheld-host", metrics)
    return {**raw, **{k: v for k, v in record.items() if k not in raw or k in ("kind", "backend")}}


def _host_name() -> str:
    import platform

    return f"{platform.machine()} {platform.processor() or 'cpu'}".strip()


def _host_os() -> str:
    import platform

    return f"{platform.system()} {platform.release()}"


# --- parsing what devices print --------------------------------------------------------
def parse_runner_ms(text: str) -> float:
    """executor_runner's output -> average ms per execution."""
    found = RUNNER_TIMING.findall(text)
    if not found:
        raise HandheldError(
            "the ExecuTorch runner printed no timing line ('N inference took X ms')",
            "check the runner binary and the pushed model; its output is above",
        )
    return float(found[-1][2])


def parse_llm_observer(text: str) -> dict:
    """llama_main / LlmModule stats (PyTorchObserver JSON, ms timestamps) -> named metrics."""
    found = OBSERVER.findall(text)
    if not found:
        raise HandheldError(
            "the LLM runner printed no 'PyTorchObserver {...}' stats line",
            "use ExecuTorch's llama_main (or the demo app's benchmark mode)",
        )
    s = json.loads(found[-1])
    prefill_ms = s["prompt_eval_end_ms"] - s["inference_start_ms"]
    decode_ms = s["inference_end_ms"] - s["prompt_eval_end_ms"]
    # the first generated token comes out of prefill, the rest out of decode steps
    decoded = max(s["generated_tokens"] - 1, 1)
    return {
        "prefill_tok_s": s["prompt_tokens"] / prefill_ms * 1000,
        "decode_tok_s": decoded / decode_ms * 1000 if decode_ms > 0 else 0.0,
        "time_to_first_token_ms": s["first_token_ms"] - s["inference_start_ms"],
        "model_load_ms": s["model_load_end_ms"] - s["model_load_start_ms"],
    }


# --- ETDump ----------------------------------------------------------------------------
def hotspots(events: Iterable[tuple[str, list[float]]], top: int = 12) -> list[dict]:
    """(operator name, per-call ms) pairs -> the `top` operators by total time, with shares."""
    totals: dict[str, list[float]] = {}
    for name, durations in events:
        if name in FRAMEWORK_EVENTS or not durations:
            continue
        op = name.removeprefix("native_call_")
        totals.setdefault(op, []).extend(durations)
    grand = sum(sum(d) for d in totals.values()) or 1.0
    rows = [{"op": op, "total_ms": sum(d), "calls": len(d), "share": sum(d) / grand} for op, d in totals.items()]
    return sorted(rows, key=lambda r: -r["total_ms"])[:top]


def hotspots_from_etdump(etdump: Path, etrecord: Path | None = None, top: int = 12) -> list[dict]:
    """Per-operator time from an ETDump (the 'Execute' blocks), via ExecuTorch's Inspector."""
    from executorch.devtools import Inspector

    try:
        inspector = Inspector(etdump_path=str(etdump), etrecord=str(etrecord) if etrecord else None)
    except Exception as err:  # the Inspector raises bare exceptions on a foreign or truncated file
        raise HandheldError(
            f"{etdump} is not a readable ETDump ({err})",
            "pull it again; build the runner with EXECUTORCH_ENABLE_EVENT_TRACER=ON",
        ) from None
    events = [
        (e.name, list(e.perf_data.raw))
        for block in inspector.event_blocks
        if block.name == "Execute"
        for e in block.events
        if e.perf_data
    ]
    return hotspots(events, top)


# --- validation and loading ------------------------------------------------------------
def validate_record(record: dict, source: str = "benchmark record") -> dict:
    from export.bundle.verify import schema_errors

    errors = schema_errors(record, "bench")
    if errors:
        raise HandheldError(
            f"{source} does not follow bench.schema.json:\n  - " + "\n  - ".join(errors[:12]),
            "re-run `handheld bench` (or the app's benchmark mode) with this Handheld",
        )
    return record


def load_record(path: Path) -> dict:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise HandheldError(f"{path} does not exist", "pass JSON files written by `handheld bench`") from None
    except IsADirectoryError:
        raise HandheldError(
            f"{path} is a folder, not a bench record", "pass JSON files written by `handheld bench`"
        ) from None
    except UnicodeDecodeError:
        raise HandheldError(
            f"{path} is not a text file (a bench record is JSON)", "pass JSON files written by `handheld bench`"
        ) from None
    except json.JSONDecodeError as err:
        raise HandheldError(
            f"{path} is not valid JSON ({err})", "pass JSON files written by `handheld bench`"
        ) from None
    if not isinstance(record, dict):
        raise HandheldError(
            f"{path} holds a JSON {type(record).__name__}, not a bench record",
            "pass JSON files written by `handheld bench`",
        )
    return validate_record(record, str(path))


def write_record(record: dict, path: Path) -> Path:
    validate_record(record)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
