"""Parity of exported segmenters with the eager fp32 model, on real held-out photos.

Random tensors hide divergences that real images expose (a DINOv2 model passed random-input
parity and diverged on photos), so every check runs the held-out skimage photos with click sets
a user would make. Reported per variant: mask IoU vs eager (median, worst) and logits SQNR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from export.manifest import update_manifest
from export.tolerances import Tolerances
from export.tolerances import failures as tolerance_failures
from runtime.clicks import Click
from runtime.manifest import load_manifest

# Named tolerances (IoU of thresholded masks on the unpadded content; SQNR of logits in dB).
FP32_MEDIAN_IOU_MIN = 0.995
FP32_WORST_IOU_MIN = 0.97
FP32_SQNR_MIN_DB = 35.0
INT8_MEDIAN_IOU_MIN = 0.90
INT8_WORST_IOU_MIN = 0.70
INT8_SQNR_MIN_DB = 12.0
TOLERANCES: dict[str, Tolerances] = {
    variant: {"median_iou": ("min", med), "worst_iou": ("min", worst), "median_sqnr_db": ("min", sqnr)}
    for variant, (med, worst, sqnr) in {
        "fp32": (FP32_MEDIAN_IOU_MIN, FP32_WORST_IOU_MIN, FP32_SQNR_MIN_DB),
        "int8": (INT8_MEDIAN_IOU_MIN, INT8_WORST_IOU_MIN, INT8_SQNR_MIN_DB),
    }.items()
}


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference**2)) / noise)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def parity_cases(reference) -> list[tuple[str, np.ndarray, list[Click]]]:
    """(name, rgb, clicks) on every held-out photo: no clicks (auto), 1 click, 3 clicks.

    Click positions come from the eager model's own auto mask, so cases are deterministic and
    land on real objects.
    """
    from export.sam.data import held_out_images

    cases = []
    for name, rgb in held_out_images().items():
        reference.set_image(rgb)
        h, w = rgb.shape[:2]
        first = reference.auto().clicks or [Click(w / 2, h / 2, True)]
        three = first + [Click(w * 0.05, h * 0.05, False), Click(w * 0.5, h * 0.6, True)]
        cases += [(f"{name}/auto", rgb, []), (f"{name}/1click", rgb, first), (f"{name}/3clicks", rgb, three)]
    return cases


def compare(reference, candidate, cases) -> dict:
    ious, sqnrs = [], []
    for _, rgb, clicks in cases:
        reference.set_image(rgb)
        candidate.set_image(rgb)
        ref, out = reference.predict(clicks), candidate.predict(clicks)
        h, w = reference._box.content
        ious.append(mask_iou(ref.logits[:h, :w] > 0, out.logits[:h, :w] > 0))
        sqnrs.append(sqnr_db(ref.logits[:h, :w], out.logits[:h, :w]))
    return {
        "cases": len(cases),
        "median_iou": round(float(np.median(ious)), 4),
        "worst_iou": round(float(np.min(ious)), 4),
        "worst_case": cases[int(np.argmin(ious))][0],
        "median_sqnr_db": round(float(np.median(sqnrs)), 2),
        "min_sqnr_db": round(float(np.min(sqnrs)), 2),
    }


def judge(variant: str, numbers: dict) -> list[str]:
    """`numbers` (from `compare`) against the variant's tolerances; the worst case is named."""
    worst = f" ({numbers['worst_case']})"
    return [f + (worst if f.startswith("worst_iou") else "") for f in tolerance_failures(numbers, TOLERANCES[variant])]


def graph_failures(backend: str, graph: dict) -> list[str]:
    if backend == "executorch":
        fails = [f"ops outside XNNPACK: {graph['non_delegated_ops']}"] if graph["non_delegated_ops"] else []
        if graph["delegated_subgraphs"] != 1:
            fails.append(
                f"{graph['delegated_subgraphs']} XNNPACK subgraphs (layout transposes between them); expected 1"
            )
        return fails
    return []


def check_variants(folder: Path, backend: str, model, variants: dict, graphs: dict | None = None) -> dict:
    from runtime.sam_backends import load_forward
    from runtime.segment import Segmenter

    def eager_forward(image, clicks):
        with torch.no_grad():
            return model(torch.from_numpy(image), torch.from_numpy(clicks)).numpy()

    reference = Segmenter(eager_forward, model.config.input_spec, "eager fp32")
    report, failures = (
        {
            "backend": backend,
            "tolerances": TOLERANCES,
        },
        [],
    )
    if backend == "coreml":
        from export.sam.coreml_check import check_coreml

        for variant, entry in variants.items():
            report[variant] = check_coreml(Path(folder) / entry["file"], model, int8=variant == "int8")
            failures += [f"{variant}: {f}" for f in report[variant]["failures"]]
    else:
        cases = parity_cases(reference)
        for variant, entry in variants.items():
            run = load_forward(backend, Path(folder) / entry["file"])
            candidate = Segmenter(
                lambda image, clicks, run=run: run(image, clicks)[0], model.config.input_spec, f"{backend} {variant}"
            )
            report[variant] = compare(reference, candidate, cases)
            failures += [f"{variant}: {f}" for f in judge(variant, report[variant])]
    for variant, graph in (graphs or {}).items():
        failures += [f"{variant}: {f}" for f in graph_failures(backend, graph)]
    report["failures"] = failures
    report["passed"] = not failures
    return report


def reference_model(manifest: dict):
    """The eager model an artifact was exported from: its recorded checkpoint, or the shipped one."""
    from export.sam.model import load_checkpoint, shipped_checkpoint

    checkpoint = Path(manifest["checkpoint"]["path"])
    return load_checkpoint(checkpoint if checkpoint.is_file() else shipped_checkpoint())


def check_artifact(folder: Path, **_) -> dict:
    """`handheld parity DIR` for kind "sam": re-run parity from the files and print it."""
    manifest = load_manifest(folder)
    model = reference_model(manifest)
    report = check_variants(Path(folder), manifest["backend"], model, manifest["variants"], manifest.get("graph"))
    update_manifest(folder, parity=report)
    for line in format_report(report):
        print(line)
    return report


def format_report(report: dict) -> list[str]:
    lines = []
    for variant in ("fp32", "int8"):
        r = report.get(variant)
        if r and "median_iou" in r:
            lines.append(
                f"  {report['backend']:<10} {variant}: IoU vs eager fp32 median {r['median_iou']:.4f} worst {r['worst_iou']:.4f} "
                f"({r['worst_case']}), logits SQNR median {r['median_sqnr_db']:.1f} dB over {r['cases']} real-photo cases"
            )
        elif r:
            lines.append(f"  {report['backend']:<10} {variant}: {r.get('summary', r)}")
    lines.append(f"  parity {'PASSED' if report['passed'] else 'FAILED: ' + '; '.join(report['failures'])}")
    return lines
