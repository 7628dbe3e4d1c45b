"""`handheld report RESULTS... --out DIR`: benchmark records -> report.png + report.html.

Reads records of any device (bench.schema.json). The PNG has latency and throughput per
model/backend/device, artifact sizes, ETDump hot spots and the parity table; the HTML page
embeds that PNG and lists every number in tables, with no external resources.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from export.device.results import load_record
from runtime.errors import HandheldError

LATENCY_UNITS = ("ms",)
THROUGHPUT_UNITS = ("tok/s", "frames/s")
DEVICE_COLORS = {"host": "#4C72B0", "android": "#55A868", "ios": "#C44E52"}
TOP_HOTSPOTS = 8
LOG_SCALE_RATIO = 50  # bars spanning more than this factor get a log axis
PARITY_COLUMNS = 4  # parity numbers per row in the PNG (the HTML page lists all)
PNG_TEXT = 150  # characters of parity numbers that fit the PNG's table row
PARITY_SKIP = ("tolerances", "failures", "passed", "counts_artifact", "counts_eager")


def record_label(record: dict) -> str:
    device = record["device"]
    where = "host" if device["type"] == "host" else device.get("name") or device["id"]
    return f"{record['model']} [{record['backend']}] @ {where}"


def metric_label(m: dict) -> str:
    parts = [m["name"]]
    if "variant" in m:
        parts.append(m["variant"])
    if "threads" in m:
        parts.append(f"{m['threads']}T")
    return " ".join(parts)


def short_label(record: dict) -> str:
    """Chart labels: the device is the bar's colour, so model and backend suffice."""
    return f"{record['model'][:28]} [{record['backend']}]"


def metric_rows(records: list[dict], units: tuple[str, ...]) -> list[tuple[str, float, str, str]]:
    """(label, value, unit, device type) for every metric in `units`, in record order."""
    return [
        (f"{short_label(r)} {metric_label(m)}", m["value"], m["unit"], r["device"]["type"])
        for r in records
        for m in r["metrics"]
        if m["unit"] in units
    ]


def parity_scalars(parity: dict, prefix: str = "") -> dict:
    """Numbers and booleans of a (nested) parity report by dotted path, tolerances left out."""
    out = {}
    for key, value in parity.items():
        if key in PARITY_SKIP:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(parity_scalars(value, f"{path}."))
        elif isinstance(value, (int, float)):  # bool included: selection_identical=True
            out[path.removeprefix("metrics.")] = value
    return out


def parity_rows(records: list[dict], columns: int | None = None) -> tuple[list[str], list[list[str]]]:
    """A header and one row per (model, backend): passed + its first `columns` parity numbers (all by default)."""
    seen, rows = set(), []
    for r in records:
        parity, key = r.get("parity"), (r["model"], r["backend"])
        if not isinstance(parity, dict) or key in seen:
            continue
        seen.add(key)
        scalars = list(parity_scalars(parity).items())[:columns]
        numbers = "; ".join(f"{k}={v if isinstance(v, bool) else _fmt(v)}" for k, v in scalars if k != "passed")
        rows.append([f"{r['model']} [{r['backend']}]", str(parity.get("passed", "?")), numbers])
    return ["model [backend]", "passed", "numbers"], rows


def size_rows(records: list[dict]) -> list[tuple[str, float]]:
    sizes = {f"{r['model']} [{r['backend']}]": r["size_bytes"] / 2**20 for r in records}
    return sorted(sizes.items(), key=lambda kv: -kv[1])


def hotspot_rows(records: list[dict]) -> list[tuple[str, dict]]:
    return [(short_label(r), h) for r in records for h in r.get("hotspots", [])[:TOP_HOTSPOTS]]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _bars(ax, rows, title, xlabel, colors=None):
    if not rows:
        ax.text(
            0.5,
            0.5,
            f"{title}: none in these results",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="gray",
            fontsize=9,
        )
        ax.set_axis_off()
        return
    labels, values = [r[0] for r in rows], [r[1] for r in rows]
    y = range(len(rows))
    ax.barh(y, values, color=colors or "#4C72B0")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    for i, v in enumerate(values):
        ax.text(v, i, f" {_fmt(v)}", va="center", fontsize=6)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > LOG_SCALE_RATIO:  # 30 ms beside 900 ms stays readable
        ax.set_xscale("log")
        ax.set_xlabel(f"{xlabel} (log scale)", fontsize=8)
    ax.margins(x=0.15)


def render_png(records: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency, throughput = metric_rows(records, LATENCY_UNITS), metric_rows(records, THROUGHPUT_UNITS)
    hot = hotspot_rows(records)
    header, parity = parity_rows(records, PARITY_COLUMNS)
    parity = [[*row[:2], row[2] if len(row[2]) <= PNG_TEXT else row[2][: PNG_TEXT - 3] + "..."] for row in parity]
    n_bars = max(len(latency), len(throughput), len(hot), 4)
    fig = plt.figure(figsize=(17, 4 + 0.22 * n_bars + 0.35 * len(parity)), layout="constrained")
    grid = fig.add_gridspec(
        3, 2, height_ratios=[max(len(latency), len(throughput), 3), max(len(hot), len(records), 3), 1 + len(parity)]
    )
    fig.suptitle(f"Handheld benchmark report: {len(records)} result(s)", fontsize=12)

    color = lambda rows: [DEVICE_COLORS[r[3]] for r in rows]  # noqa: E731
    _bars(fig.add_subplot(grid[0, 0]), latency, "Latency (lower is better)", "ms", color(latency))
    _bars(
        fig.add_subplot(grid[0, 1]),
        [(f"{r[0]} ({r[2]})", r[1]) for r in throughput],
        "Throughput (higher is better)",
        "tokens or frames per second",
        color(throughput),
    )
    # the whole folder: a SqueezeSAM folder also holds its fp32 variant and the teacher it is timed against
    _bars(
        fig.add_subplot(grid[1, 0]), size_rows(records), "Artifact folder size (every file: variants, baselines)", "MiB"
    )
    _bars(
        fig.add_subplot(grid[1, 1]),
        [(f"{label}: {h['op'][:40]}", 100 * h["share"]) for label, h in hot],
        "ETDump hot spots",
        "% of operator time",
    )

    ax = fig.add_subplot(grid[2, :])
    ax.set_axis_off()
    ax.set_title("Parity (artifact vs eager, from the manifests)", fontsize=10, loc="left")
    if parity:
        table = ax.table(
            cellText=parity,
            colLabels=header,
            loc="upper left",
            cellLoc="left",
            colLoc="left",
            colWidths=[0.22, 0.06, 0.72],
        )
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        for cell in table.get_celld().values():
            cell.PAD = 0.01  # matplotlib pads by a fraction of the cell width: 10% of a wide cell is a gap
    else:
        ax.text(
            0.5,
            0.5,
            "no parity numbers in these results",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="gray",
        )
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in DEVICE_COLORS.values()]
    fig.legend(
        handles, list(DEVICE_COLORS), loc="outside upper right", fontsize=8, title="device", title_fontsize=8, ncols=3
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summary_section(summary: dict) -> str:
    """The demo's model x backend table and step times (export/demo.py), first on the page."""
    rows = [
        [
            r["model"],
            r["backend"],
            r["parity"],
            "-" if r["size_mb"] is None else f"{r['size_mb']:.1f}",
            r["speed"],
            r["result"],
        ]
        for r in summary["rows"]
    ]
    steps = [[s["step"], f"{s['seconds']:.0f}", s["status"]] for s in summary["steps"]]
    return (
        "<h2>Demo summary</h2>"
        + _table(["model", "backend", "parity", "MB", "speed", "result"], rows)
        + "<h3>Demo steps</h3>"
        + _table(["step", "seconds", "status"], steps)
    )


def render_html(records: list[dict], png: Path, path: Path, sources: list[Path], summary: dict | None = None) -> Path:
    image = base64.b64encode(png.read_bytes()).decode()
    metrics = [
        [
            record_label(r),
            r["runner"],
            m["name"],
            m.get("variant", ""),
            m.get("threads", ""),
            _fmt(m["value"]),
            m["unit"],
            len(m.get("samples", [])),
        ]
        for r in records
        for m in r["metrics"]
    ]
    header, parity = parity_rows(records)
    hot = [
        [label, h["op"], _fmt(h["total_ms"]), h["calls"], f"{100 * h['share']:.1f}%"]
        for label, h in hotspot_rows(records)
    ]
    style = "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#eee}img{max-width:100%}"
    sections = [
        f"<h1>Handheld benchmark report</h1><p>{len(records)} result(s): {html.escape(', '.join(p.name for p in sources))}</p>",
        summary_section(summary) if summary else "",
        f'<img alt="benchmark charts" src="data:image/png;base64,{image}">',
        "<h2>Metrics</h2>"
        + _table(["result", "runner", "metric", "variant", "threads", "value", "unit", "samples"], metrics),
        "<h2>Parity</h2>" + (_table(header, parity) if parity else "<p>no parity numbers</p>"),
        "<h2>Artifact folder sizes (every file: variants, baselines)</h2>"
        + _table(["model [backend]", "MiB"], [[k, f"{v:.2f}"] for k, v in size_rows(records)]),
        "<h2>ETDump hot spots</h2>"
        + (
            _table(["result", "operator", "total ms", "calls", "share"], hot)
            if hot
            else "<p>no ETDump profiles in these results</p>"
        ),
    ]
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Handheld report</title><style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    return path


def render_report(results: list[Path], out: Path, summary: dict | None = None) -> list[Path]:
    """Validate every record, then write out/report.png and out/report.html."""
    if not results:
        raise HandheldError("no benchmark results given", "pass bench JSON files from `handheld bench`")
    from export.outputs import atomic_dir

    records = [load_record(p) for p in results]
    out = Path(out)
    with atomic_dir(out) as tmp:
        png = render_png(records, tmp / "report.png")
        render_html(records, png, tmp / "report.html", [Path(p) for p in results], summary)
    return [out / "report.png", out / "report.html"]
