"""`make demo` step for SqueezeSAM: export all backends, check parity, bench vs the teacher,
segment a sample photo and write the overlay."""

from __future__ import annotations

from pathlib import Path

from export.config import Backend
from export.sam.config import SamExportConfig


def run_demo(out_root: Path) -> list[str]:
    from PIL import Image

    from export.sam.bench import bench_artifact, format_table
    from export.sam.data import held_out_images
    from export.sam.export import export_sam
    from export.sam.parity import format_report
    from runtime.segment import Segmenter, overlay

    root = Path(out_root) / "sam"
    lines = ["SqueezeSAM (shipped checkpoint, 256 px):"]
    for backend in Backend:
        folder = root / backend.value
        report = export_sam(SamExportConfig(backend=backend, with_teacher=backend is Backend.EXECUTORCH), folder)
        lines += [f" {folder}"] + format_report(report)
    bench = bench_artifact(root / "executorch", threads=(1, 2), runs=5)
    lines += ["  bench (ExecuTorch/XNNPACK, this machine):"] + ["   " + l for l in format_table(bench)]
    segmenter = Segmenter.from_artifact(root / "executorch", "int8")
    photo = held_out_images()["astronaut"]
    segmenter.set_image(photo)
    result = segmenter.auto()
    png = root / "astronaut_auto_int8.png"
    Image.fromarray(overlay(photo, result)).save(png)
    lines.append(f"  auto-mode overlay (ExecuTorch int8): {png} (mask {100 * result.mask.mean():.1f}% of the photo)")
    return lines
