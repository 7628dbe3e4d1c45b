"""`make demo` step for SqueezeSAM: export all backends, check parity, bench vs the teacher,
segment a sample photo and write the overlay."""

from __future__ import annotations

from pathlib import Path

from export.config import Backend
from export.demo import DemoRow, StepReport, verdict
from export.sam.config import SamExportConfig

# the demo-path test swaps in a tiny checkpoint and no teacher
DEMO_CHECKPOINT: str | None = None  # None: the shipped SqueezeSAM
DEMO_TEACHER = True  # LiteMedSAM exported beside the ExecuTorch artifact: the bench's anchor
DEMO_CALIBRATION = SamExportConfig.calibration_images
DEMO_ENFORCE_PARITY = True  # a random tiny model records its parity instead


def run_demo(out_root: Path) -> StepReport:
    from PIL import Image

    from export.sam.bench import bench_artifact, format_table, path_size_mb
    from export.sam.data import held_out_images
    from export.sam.evaluate import iou
    from export.sam.export import export_sam
    from export.sam.ground_truth import load_ground_truth
    from export.sam.parity import format_report
    from runtime.manifest import load_manifest
    from runtime.segment import Segmenter, overlay

    root = Path(out_root) / "sam"
    report = StepReport([f"SqueezeSAM ({DEMO_CHECKPOINT or 'shipped checkpoint'}):"])
    verdicts = {}
    for backend in Backend:
        folder = root / backend.value
        cfg = SamExportConfig(
            checkpoint=DEMO_CHECKPOINT,
            backend=backend,
            with_teacher=DEMO_TEACHER and backend is Backend.EXECUTORCH,
            calibration_images=DEMO_CALIBRATION,
            enforce_parity=DEMO_ENFORCE_PARITY,
        )
        parity = export_sam(cfg, folder)
        verdicts[backend] = verdict(parity)
        report.lines += [f" {folder}"] + format_report(parity)
    bench = bench_artifact(root / "executorch", threads=(1, 2), runs=5, show=False)
    report.lines += ["  bench (ExecuTorch/XNNPACK, this machine):"] + ["   " + line for line in format_table(bench)]
    segmenter = Segmenter.from_artifact(root / "executorch", "int8")
    photo = held_out_images()["astronaut"]
    segmenter.set_image(photo)
    result = segmenter.auto()
    png = root / "astronaut_auto_int8.png"
    Image.fromarray(overlay(photo, result)).save(png)
    # judged against the hand-checked mask of the astronaut (export/sam/ground_truth.py), not by its size
    truth = load_ground_truth()["astronaut"]["astronaut"].mask
    score = iou(result.mask, truth)
    mask = f"auto mode on astronaut: IoU {score:.2f} with the hand-checked astronaut ({png.name})"
    report.lines.append(
        f"  auto-mode overlay (ExecuTorch int8): {png}: mask {100 * result.mask.mean():.1f}% of the photo, "
        f"IoU {score:.2f} with the hand-checked astronaut (`handheld eval sam` scores every photo)"
    )
    int8 = {r["threads"]: r for r in bench["rows"] if r["model"] == "squeezesam int8"}
    for backend in Backend:
        folder = root / backend.value
        # the int8 file the manifest names: a .pte, an .onnx or an .mlpackage folder
        size = path_size_mb(folder / load_manifest(folder)["variants"]["int8"]["file"])
        speed, result_text = (
            "- (no CoreML runtime on Linux)" if backend is Backend.COREML else "",
            mask if backend is Backend.EXECUTORCH else "",
        )
        if backend is Backend.EXECUTORCH and 2 in int8:
            speed = f"int8 first mask {int8[2]['first_mask_ms']:.0f} ms @2T"
        report.rows.append(DemoRow("SqueezeSAM int8", backend.value, verdicts[backend], size, speed, result_text))
    return report
