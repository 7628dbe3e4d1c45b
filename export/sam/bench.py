"""`handheld bench DIR` for segmenters: SqueezeSAM against the LiteMedSAM teacher.

Both run from artifacts of the same backend on the same machine in the same run. Each model and
thread count is measured in a fresh subprocess so that peak RSS belongs to that model alone.
- first mask: preprocess a photo + everything needed for one clicked mask (SqueezeSAM: one
  network pass; teacher: image encoder + box decoder)
- per click: the work for one more click on the same photo (SqueezeSAM: one pass again, it fuses
  clicks early; teacher: decoder only, its image embedding is cached)
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from export.worker import peak_rss_mb
from runtime.errors import HandheldError
from runtime.manifest import load_manifest


def path_size_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)


def _time(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def measure_squeezesam(folder: Path, variant: str, threads: int, runs: int) -> dict:
    from export.sam.data import skimage_image
    from runtime.clicks import Click
    from runtime.sam_backends import load_forward
    from runtime.segment import InputSpec, Segmenter

    manifest = load_manifest(folder, verify=False)
    run = load_forward(manifest["backend"], folder / manifest["variants"][variant]["file"], threads=threads)
    seg = Segmenter(lambda image, clicks: run(image, clicks)[0], InputSpec.from_dict(manifest["model"]))
    rgb = skimage_image("astronaut")
    click = [Click(250, 150, True)]

    def first_mask():
        seg.set_image(rgb)
        seg.predict(click)

    first_mask()  # warm-up (XNNPACK packs weights on the first call)
    first = _time(first_mask, runs)
    two = click + [Click(40, 40, False)]
    per_click = _time(lambda: seg.predict(two), runs)
    return {"first_mask_ms": round(first, 2), "per_click_ms": round(per_click, 2)}


def measure_teacher(folder: Path, threads: int, runs: int) -> dict:
    import torch
    import torch.nn.functional as F

    from export.sam.data import skimage_image
    from runtime.sam_backends import load_forward

    manifest = load_manifest(folder, verify=False)
    files = manifest["teacher"]["files"]
    encoder = load_forward(manifest["backend"], folder / files["encoder"], threads=threads)
    decoder = load_forward(manifest["backend"], folder / files["decoder"], threads=threads)
    size = manifest["teacher"]["image_size"]
    rgb = skimage_image("astronaut")
    box = np.array([[60, 20, 200, 250]], np.float32)
    state = {}

    def first_mask():
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).numpy()
        state["embedding"] = encoder(x)[0]
        decoder(state["embedding"], box)

    first_mask()
    first = _time(first_mask, runs)
    per_click = _time(lambda: decoder(state["embedding"], box), runs)
    return {"first_mask_ms": round(first, 2), "per_click_ms": round(per_click, 2)}


def _in_subprocess(kind: str, folder: Path, variant: str, threads: int, runs: int) -> dict:
    """Measure one model in a fresh interpreter; returns its numbers plus its own peak RSS."""
    from export.worker import run_worker

    return run_worker(
        "export.sam.bench:_measure_here",
        kind,
        Path(folder),
        variant,
        threads,
        runs,
        what=f"{kind} {variant}",
        fix="run `handheld parity DIR` first to see whether the artifact loads",
    )


def _measure_here(kind: str, folder: str, variant: str, threads: int, runs: int) -> dict:
    folder = Path(folder)
    numbers = (
        measure_teacher(folder, threads, runs)
        if kind == "teacher"
        else measure_squeezesam(folder, variant, threads, runs)
    )
    numbers["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return numbers


def bench_artifact(
    folder: Path, baseline: Path | None = None, threads=(1, 2), runs: int = 5, show: bool = True
) -> dict:
    """Time every variant (and the teacher, when the folder holds it) in worker processes;
    `show` prints the table (the demo prints it inside its own step report instead)."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    if manifest["backend"] == "coreml":
        raise HandheldError(
            "CoreML artifacts can only be timed on macOS/iOS", "bench the executorch or onnx artifact here"
        )
    models = [("squeezesam", v) for v in manifest["variants"]]
    if manifest.get("teacher"):
        models.append(("teacher", manifest["teacher"]["variant"]))
    sizes = {f"squeezesam {v}": path_size_mb(folder / manifest["variants"][v]["file"]) for v in manifest["variants"]}
    if manifest.get("teacher"):
        sizes[f"teacher {manifest['teacher']['variant']}"] = round(
            sum(path_size_mb(folder / f) for f in manifest["teacher"]["files"].values()), 3
        )
    rows = []
    for n in threads:
        for kind, variant in models:
            numbers = _in_subprocess(kind, folder, variant, n, runs)
            rows.append({"model": f"{kind} {variant}", "threads": n, "size_mb": sizes[f"{kind} {variant}"], **numbers})
    result = {
        "backend": manifest["backend"],
        "runs": runs,
        "image": "skimage astronaut (512x512)",
        "rows": rows,
        "ratios": ratios(rows),
    }
    if show:
        print("\n".join(format_table(result)))
    return result


def ratios(rows: list[dict]) -> list[dict]:
    """teacher / SqueezeSAM for each SqueezeSAM variant and thread count (higher = SqueezeSAM better)."""
    out = []
    for t in (r for r in rows if r["model"].startswith("teacher")):
        for s in (r for r in rows if r["model"].startswith("squeezesam") and r["threads"] == t["threads"]):
            out.append(
                {
                    "squeezesam": s["model"],
                    "teacher": t["model"],
                    "threads": t["threads"],
                    "first_mask_speedup": round(t["first_mask_ms"] / s["first_mask_ms"], 2),
                    "per_click_speedup": round(t["per_click_ms"] / s["per_click_ms"], 2),
                    "size_ratio": round(t["size_mb"] / s["size_mb"], 1),
                }
            )
    return out


def format_table(result: dict) -> list[str]:
    lines = [f"{'model':<18} {'thr':>3} {'size MB':>8} {'first mask ms':>14} {'per click ms':>13} {'peak RSS MB':>12}"]
    for r in result["rows"]:
        lines.append(
            f"{r['model']:<18} {r['threads']:>3} {r['size_mb']:>8.2f} {r['first_mask_ms']:>14.1f} {r['per_click_ms']:>13.1f} {r['peak_rss_mb']:>12.0f}"
        )
    for q in result["ratios"]:
        lines.append(
            f"{q['teacher']} / {q['squeezesam']} @{q['threads']} threads: first mask {q['first_mask_speedup']}x faster, "
            f"per click {q['per_click_speedup']}x, {q['size_ratio']}x smaller"
        )
    return lines
