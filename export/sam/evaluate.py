"""Held-out quality of a segmenter.

- `evaluate_on_ground_truth` / `handheld eval sam`: against the hand-checked masks of
  export/sam/ground_truth.py, through the user's path (runtime.segment.Segmenter): mIoU at
  1/3/5 simulated clicks, auto mode against each photo's salient subject, a click on a part
  against its whole object; a contact sheet to look at.
- `evaluate`: the training run's own tracker, the student against its teacher's targets
  (agreement with the teacher, not quality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime.clicks import Click, interior_point, next_click


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@torch.no_grad()
def click_curve(predict, target: np.ndarray, max_clicks: int = 5) -> list[float]:
    """IoU after each of `max_clicks` deterministic SAM-style clicks. predict(clicks) -> bool mask."""
    clicks = [Click(*interior_point(target), True)]
    ious = []
    for _ in range(max_clicks):
        pred = predict(clicks)
        ious.append(iou(pred, target))
        if (c := next_click(pred, target)) is None:
            ious += [ious[-1]] * (max_clicks - len(ious))
            break
        clicks.append(c)
    return ious


def evaluate_on_ground_truth(segmenter, truth: dict, images: dict[str, np.ndarray], at=(1, 3, 5)) -> dict:
    """A segmenter (runtime.segment.Segmenter: the user's path, masks at photo resolution) against
    the hand-checked ground truth (export/sam/ground_truth.py):
    - mIoU after 1/3/5 SAM-style clicks on every whole object (first click at its deepest point,
      each later one in the largest error region);
    - auto mode (no clicks) against each photo's salient subject;
    - part -> whole: one click at a part's deepest point, IoU with its whole object, per case.
    Returns the summary, every per-object number, and `shots` (what was predicted where, for
    the contact sheet)."""
    from export.sam.ground_truth import part_cases

    curves, rows, auto, parts, shots = [], [], {}, {}, []
    for image_name, objects in truth.items():
        segmenter.set_image(images[image_name])

        def predict(clicks):
            return segmenter.predict(clicks).mask

        for obj in objects.values():
            if obj.whole is None:
                curve = click_curve(predict, obj.mask, max(at))
                curves.append(curve)
                rows.append({"image": image_name, "object": obj.name, "ious": [round(v, 4) for v in curve]})
                click = Click(*interior_point(obj.mask), True)
                shots.append(
                    {
                        "image": image_name,
                        "title": f"{obj.name}: 1 click",
                        "pred": predict([click]),
                        "truth": obj.mask,
                        "click": click,
                    }
                )
            if obj.salient:
                result = segmenter.auto()
                auto[image_name] = round(iou(result.mask, obj.mask), 4)
                shots.append(
                    {
                        "image": image_name,
                        "title": f"auto mode vs {obj.name}",
                        "pred": result.mask,
                        "truth": obj.mask,
                        "click": None,
                    }
                )
        for part, whole in part_cases({image_name: objects}):
            click = Click(*interior_point(part.mask), True)
            pred = predict([click])
            parts[f"{image_name}: {part.name} -> {whole.name}"] = round(iou(pred, whole.mask), 4)
            shots.append(
                {
                    "image": image_name,
                    "title": f"{part.name} -> {whole.name}",
                    "pred": pred,
                    "truth": whole.mask,
                    "click": click,
                }
            )
    curves = np.array(curves)
    summary = {f"miou_{k}_clicks": round(float(curves[:, k - 1].mean()), 4) for k in at}
    summary["miou_auto_vs_salient"] = round(float(np.mean(list(auto.values()))), 4)
    summary["part_to_whole_mean_iou"] = round(float(np.mean(list(parts.values()))), 4)
    summary["part_to_whole_cases_at_0.7"] = f"{sum(v >= 0.7 for v in parts.values())}/{len(parts)}"
    summary["whole_objects"], summary["part_cases"] = len(curves), len(parts)
    return {
        "summary": summary,
        "whole_photo_baseline": whole_photo_baseline(truth),
        "auto": auto,
        "part_to_whole": parts,
        "objects": rows,
        "shots": shots,
    }


def whole_photo_baseline(truth: dict) -> dict:
    """What a segmenter that always returns the whole photo scores: the floor any number here
    must be read against (the held-out subjects fill much of their frames)."""
    from export.sam.ground_truth import part_cases

    wholes = [o.mask.mean() for objects in truth.values() for o in objects.values() if o.whole is None]
    salient = [o.mask.mean() for objects in truth.values() for o in objects.values() if o.salient]
    parts = [whole.mask.mean() for _, whole in part_cases(truth)]
    return {
        "miou_any_clicks": round(float(np.mean(wholes)), 4),
        "miou_auto_vs_salient": round(float(np.mean(salient)), 4),
        "part_to_whole_mean_iou": round(float(np.mean(parts)), 4),
    }


def shots_sheet(shots: list[dict], images: dict[str, np.ndarray], path: Path, title: str) -> None:
    """One tile per shot: the photo dimmed outside the predicted mask, the prediction's edge in
    yellow, the ground truth's in green, the click in red, the IoU in the tile's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    cols = 6
    rows = -(-len(shots) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 2.7))
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    for ax, shot in zip(np.atleast_1d(axes).flat, shots):
        photo = images[shot["image"]][..., :3].astype(float) / 255
        shown = np.where(shot["pred"][..., None], photo, 0.3 * photo)
        shown[find_boundaries(shot["truth"])] = (0.1, 1, 0.1)
        shown[find_boundaries(shot["pred"])] = (1, 1, 0)
        ax.imshow(shown)
        if shot["click"] is not None:
            ax.plot([shot["click"].x], [shot["click"].y], "o", color="red", markersize=5, markeredgecolor="white")
        ax.set_title(f"{shot['image']}: {shot['title']}\nIoU {iou(shot['pred'], shot['truth']):.2f}", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=60)
    plt.close(fig)


def run_sam_eval(model: Path | None, variant: str, out: Path) -> dict:
    """`handheld eval sam`: a segmenter (artifact folder, checkpoint, or None: the shipped
    checkpoint) against the ground truth; writes OUT/eval.json and OUT/contact_sheet.png."""
    import json

    from export.outputs import atomic_dir
    from export.sam.data import held_out_images
    from export.sam.ground_truth import load_ground_truth
    from export.sam.predictor import eager_segmenter, open_segmenter

    segmenter = eager_segmenter() if model is None else open_segmenter(model, variant)
    images = held_out_images()
    result = evaluate_on_ground_truth(segmenter, load_ground_truth(), images)
    shots = result.pop("shots")
    result = {"model": segmenter.name, "source": str(model) if model else "shipped checkpoint", **result}
    with atomic_dir(Path(out)) as tmp:
        (tmp / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
        shots_sheet(
            shots,
            images,
            tmp / "contact_sheet.png",
            f"{result['source']} ({segmenter.name}) vs hand-checked ground truth",
        )
    return result


def format_summary(result: dict) -> list[str]:
    s, b = result["summary"], result["whole_photo_baseline"]
    return [
        f"{result['source']} ({result['model']}) vs hand-checked ground truth ({s['whole_objects']} objects, {s['part_cases']} part cases):",
        f"  mIoU 1 / 3 / 5 clicks: {s['miou_1_clicks']:.3f} / {s['miou_3_clicks']:.3f} / {s['miou_5_clicks']:.3f}",
        f"  auto mode vs the salient subject: {s['miou_auto_vs_salient']:.3f} ("
        + ", ".join(f"{k} {v:.2f}" for k, v in result["auto"].items())
        + ")",
        f"  click on a part -> whole object: mean IoU {s['part_to_whole_mean_iou']:.3f}, {s['part_to_whole_cases_at_0.7']} cases at >= 0.7",
        f"  (a mask of the whole photo scores {b['miou_any_clicks']:.3f} at any click count, {b['miou_auto_vs_salient']:.3f} in auto mode, "
        f"{b['part_to_whole_mean_iou']:.3f} part -> whole)",
    ]
