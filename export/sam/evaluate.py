"""Held-out quality: student mIoU against the teacher's masks at 1, 3 and 5 simulated clicks,
and in auto mode (no clicks) against each image's salient object."""

from __future__ import annotations

import numpy as np
import torch

from export.sam.clicks import Click, interior_point, next_click
from export.sam.data import TargetSet


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


@torch.no_grad()
def evaluate(model, targets: TargetSet, at=(1, 3, 5)) -> dict:
    from export.sam.train import click_maps, normalize

    curves, auto, auto_click = [], [], []
    for i, image in enumerate(targets.images):
        x = normalize(torch.from_numpy(image[None]), model.config, targets.content[i : i + 1])

        def predict(clicks, x=x):
            return (model(x, click_maps(model, [clicks], None))[0, 0] > 0).numpy()

        for m in np.nonzero((targets.owner == i) & (targets.whole == np.arange(len(targets.whole))))[0]:
            curves.append(click_curve(predict, targets.masks[m] > 127, max(at)))
        if targets.salient[i] >= 0:
            salient = targets.masks[targets.salient[i]] > 127
            empty = predict([])
            auto.append(iou(empty, salient))
            # the predictor's auto mode: one click at the deepest point of the empty-click mask
            point = interior_point(empty) if empty.any() else None
            auto_click.append(iou(predict([Click(*point, True)]), salient) if point else auto[-1])
    curves = np.array(curves)
    out = {f"miou_{k}_clicks": round(float(curves[:, k - 1].mean()), 4) for k in at}
    out["miou_auto"] = round(float(np.mean(auto)), 4) if auto else None
    out["miou_auto_click"] = round(float(np.mean(auto_click)), 4) if auto_click else None
    out["objects"] = len(curves)
    return out


def evaluate_on_ground_truth(segmenter, truth: dict, images: dict[str, np.ndarray], at=(1, 3, 5)) -> dict:
    """A segmenter (runtime.segment.Segmenter: the user's path, masks at photo resolution) against
    the hand-checked ground truth (export/sam/ground_truth.py):
    - mIoU after 1/3/5 SAM-style clicks on every whole object (first click at its deepest point,
      each later one in the largest error region);
    - auto mode (no clicks) against each photo's salient subject;
    - part -> whole: one click at a part's deepest point, IoU with its whole object, per case.
    Returns the summary and every per-object number (`objects`), with the masks in `masks`
    for contact sheets."""
    from export.sam.ground_truth import part_cases

    curves, rows, auto, parts, masks = [], [], {}, {}, {}
    for image_name, objects in truth.items():
        segmenter.set_image(images[image_name])

        def predict(clicks):
            return segmenter.predict(clicks).mask

        for obj in objects.values():
            if obj.whole is None:
                curve = click_curve(predict, obj.mask, max(at))
                curves.append(curve)
                rows.append({"image": image_name, "object": obj.name, "ious": [round(v, 4) for v in curve]})
                masks[(image_name, obj.name, "1 click")] = predict([Click(*interior_point(obj.mask), True)])
            if obj.salient:
                pred = segmenter.auto().mask
                auto[image_name] = round(iou(pred, obj.mask), 4)
                masks[(image_name, obj.name, "auto")] = pred
        for part, whole in part_cases({image_name: objects}):
            pred = predict([Click(*interior_point(part.mask), True)])
            parts[f"{image_name}: {part.name} -> {whole.name}"] = round(iou(pred, whole.mask), 4)
            masks[(image_name, part.name, f"click on part -> {whole.name}")] = pred
    curves = np.array(curves)
    summary = {f"miou_{k}_clicks": round(float(curves[:, k - 1].mean()), 4) for k in at}
    summary["miou_auto_vs_salient"] = round(float(np.mean(list(auto.values()))), 4)
    summary["part_to_whole_mean_iou"] = round(float(np.mean(list(parts.values()))), 4)
    summary["part_to_whole_cases_at_0.7"] = f"{sum(v >= 0.7 for v in parts.values())}/{len(parts)}"
    summary["whole_objects"], summary["part_cases"] = len(curves), len(parts)
    return {"summary": summary, "auto": auto, "part_to_whole": parts, "objects": rows, "masks": masks}
