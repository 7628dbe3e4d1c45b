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
