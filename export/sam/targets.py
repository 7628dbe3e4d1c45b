"""Training targets that fit objects: region proposals, the teacher prompted with their boxes,
box refinement, and agreement between the two.

A grid of boxes does not fit objects, and LiteMedSAM returns whatever a badly fitting box
suggests (the wall behind the astronaut). So the prompts come from the photo itself:

1. `region_proposals`: graph-based segmentation (Felzenszwalb) at three scales, then greedy
   hierarchical grouping of adjacent regions by colour, size and fill (selective search's
   recipe), every intermediate group kept. Objects made of several colours (a suit with a
   flag on it) appear as one group somewhere in the hierarchy.
2. The teacher is prompted with each proposal's bounding box, then once more with the bounding
   box of its own mask (refinement towards a fixed point: a box that fits the object returns
   the same mask).
3. A mask is kept only when two different methods agree on it: the refined teacher mask and the
   best proposal region overlap with IoU >= `AGREE_IOU`, and the refinement did not move it far
   (IoU >= `REFINE_IOU`). The target is the teacher's soft mask (its edges follow the object
   better than colour regions do: averaging the two scored lower against the ground truth).

`score_targets` measures the pipeline on the held-out photos against the hand-checked ground
truth (export/sam/ground_truth.py): recall (ground-truth objects with a kept target at
IoU >= 0.7) and precision (kept targets that lie on an annotated object and match it at
IoU >= 0.7). `python -m export.sam.targets [OUT_DIR] [--training]` prints the score and draws
the contact sheets (with --training, of the training images' targets too); docs/sam_targets.*
are its output.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PROPOSAL_SCALES = (60, 150, 400)  # Felzenszwalb scale at 256 px: fine, medium, coarse first regions
MIN_AREA, MAX_AREA = 0.004, 0.85  # proposals and targets, as fractions of the photo's area
BOX_DEDUP_IOU = 0.8  # proposals whose boxes overlap more than this prompt the teacher once
AGREE_IOU = 0.6  # teacher mask vs best proposal region: below this the target is dropped
REFINE_IOU = 0.7  # mask before vs after re-prompting with its own box
KEEP_PER_IMAGE = 24
MATCH_IOU = 0.7  # a target "recovers" a ground-truth object at this IoU


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(ys) else None


def box_iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area = lambda c: (c[2] - c[0] + 1) * (c[3] - c[1] + 1)  # noqa: E731
    inter = ix * iy
    return inter / (area(a) + area(b) - inter)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def hierarchical_groups(rgb: np.ndarray, scale: float) -> list[np.ndarray]:
    """rgb uint8 [h, w, 3] -> bool masks: Felzenszwalb's regions and every group that greedy
    merging of the most similar adjacent pair (colour histogram + small size + box fill) makes."""
    from skimage.segmentation import felzenszwalb

    labels = felzenszwalb(rgb, scale=scale, sigma=0.8, min_size=int(scale / 4))
    n = int(labels.max()) + 1
    h, w = labels.shape
    total = float(h * w)
    code = (rgb[..., 0] // 32).astype(np.int64) * 64 + (rgb[..., 1] // 32) * 8 + rgb[..., 2] // 32
    hist = np.zeros((n, 512))
    np.add.at(hist, (labels.ravel(), code.ravel()), 1)
    size = hist.sum(1)
    ys, xs = np.mgrid[:h, :w]
    lo_x, lo_y = np.full(n, w), np.full(n, h)
    hi_x, hi_y = np.full(n, -1), np.full(n, -1)
    np.minimum.at(lo_x, labels.ravel(), xs.ravel())
    np.minimum.at(lo_y, labels.ravel(), ys.ravel())
    np.maximum.at(hi_x, labels.ravel(), xs.ravel())
    np.maximum.at(hi_y, labels.ravel(), ys.ravel())
    regions = {i: (hist[i] / size[i], size[i], (lo_x[i], lo_y[i], hi_x[i], hi_y[i]), [i]) for i in range(n)}
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        for u, v in set(zip(a[differ].tolist(), b[differ].tolist())):
            neighbours[u].add(v)
            neighbours[v].add(u)

    def similarity(u: int, v: int) -> float:
        (hu, su, bu, _), (hv, sv, bv, _) = regions[u], regions[v]
        box = (min(bu[0], bv[0]), min(bu[1], bv[1]), max(bu[2], bv[2]), max(bu[3], bv[3]))
        fill = 1 - ((box[2] - box[0] + 1) * (box[3] - box[1] + 1) - su - sv) / total
        return float(np.minimum(hu, hv).sum()) + (1 - (su + sv) / total) + fill

    pairs = {(min(u, v), max(u, v)): 0.0 for u in neighbours for v in neighbours[u]}
    for key in pairs:
        pairs[key] = similarity(*key)
    made = []
    while pairs:
        u, v = max(pairs, key=pairs.get)
        k = n + len(made)
        (hu, su, bu, mu), (hv, sv, bv, mv) = regions[u], regions[v]
        regions[k] = (
            (hu * su + hv * sv) / (su + sv),
            su + sv,
            (min(bu[0], bv[0]), min(bu[1], bv[1]), max(bu[2], bv[2]), max(bu[3], bv[3])),
            mu + mv,
        )
        neighbours[k] = (neighbours[u] | neighbours[v]) - {u, v}
        for old in (u, v):
            for other in neighbours.pop(old):
                pairs.pop((min(old, other), max(old, other)), None)
                neighbours.get(other, set()).discard(old)
        for other in neighbours[k]:
            neighbours[other].add(k)
            pairs[(other, k)] = similarity(other, k)
        made.append(k)
    return [np.isin(labels, regions[k][3]) for k in list(range(n)) + made]


def region_proposals(rgb: np.ndarray) -> list[np.ndarray]:
    """Hierarchical groups at every PROPOSAL_SCALES, MIN_AREA..MAX_AREA of the photo."""
    area = rgb.shape[0] * rgb.shape[1]
    out = []
    for scale in PROPOSAL_SCALES:
        out += [m for m in hierarchical_groups(rgb, scale) if MIN_AREA * area < m.sum() < MAX_AREA * area]
    return out


@dataclass
class ObjectTargets:
    """Kept targets of one letterboxed image: soft [K, h, w] in [0, 1] (content region only),
    with the agreement (teacher vs proposal IoU) that let each one through."""

    soft: np.ndarray
    agreement: np.ndarray
    proposals: int
    prompts: int


@torch.no_grad()
def object_targets(teacher, x: torch.Tensor, content: tuple[int, int]) -> ObjectTargets:
    """x: [1, 3, S, S] letterboxed photo in [0, 1] (padding 0); content: its (rows, cols)."""
    size = x.shape[-1]
    h, w = content
    rgb = (x[0, :, :h, :w].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    regions = region_proposals(rgb)
    boxes: list[tuple] = []
    for r in regions:
        b = _bbox(r)
        if all(box_iou(b, c) < BOX_DEDUP_IOU for c in boxes):
            boxes.append(b)
    if not boxes:
        return ObjectTargets(np.zeros((0, h, w), np.float32), np.zeros(0), len(regions), 0)
    to_teacher = teacher.image_size / size
    embedding = teacher.embed(F.interpolate(x, size=(teacher.image_size,) * 2, mode="bilinear", align_corners=False))

    def decode(prompt_boxes: list[tuple]) -> np.ndarray:
        probs = []
        for chunk in torch.tensor(prompt_boxes, dtype=torch.float32).split(64):
            logits, _ = teacher.decode(embedding.expand(len(chunk), -1, -1, -1), box=chunk * to_teacher)
            probs.append(
                torch.sigmoid(F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False))[
                    :, 0, :h, :w
                ]
            )
        return torch.cat(probs).numpy()

    first = decode(boxes)
    region_stack = np.stack(regions).reshape(len(regions), -1)
    region_area = region_stack.sum(1)

    def best_region(mask: np.ndarray) -> tuple[float, int]:
        inter = region_stack @ mask.reshape(-1).astype(np.float64)
        ious = inter / (region_area + mask.sum() - inter)
        j = int(ious.argmax())
        return float(ious[j]), j

    # only masks some proposal already roughly agrees with are worth a second prompt
    hopeful = [i for i, p in enumerate(first) if (p > 0.5).any() and best_region(p > 0.5)[0] >= 0.5]
    refined = decode([_bbox(first[i] > 0.5) for i in hopeful]) if hopeful else np.zeros((0, h, w), np.float32)
    candidates = []
    for i, p in zip(hopeful, refined):
        mask = p > 0.5
        area = mask.sum()
        if not MIN_AREA * h * w < area < MAX_AREA * h * w or mask_iou(mask, first[i] > 0.5) < REFINE_IOU:
            continue
        agree, j = best_region(mask)
        if agree >= AGREE_IOU:
            candidates.append((agree, p))
    candidates.sort(key=lambda c: -c[0])
    kept: list[tuple[float, np.ndarray]] = []
    for agree, soft in candidates:
        if all(mask_iou(soft > 0.5, k > 0.5) < 0.8 for _, k in kept):
            kept.append((agree, soft))
        if len(kept) == KEEP_PER_IMAGE:
            break
    soft = np.stack([k for _, k in kept]).astype(np.float32) if kept else np.zeros((0, h, w), np.float32)
    return ObjectTargets(soft, np.array([a for a, _ in kept]), len(regions), len(boxes) + len(hopeful))


def score_targets(kept: dict[str, np.ndarray], truth: dict[str, dict[str, np.ndarray]]) -> dict:
    """kept: {image: bool [K, h, w]}, truth: {image: {object: bool [h, w]}} at the same size.
    Recall: ground-truth objects some kept target matches at IoU >= MATCH_IOU. Precision: of the
    kept targets lying mostly (>= 50%) on an annotated object, those matching one at MATCH_IOU
    (a target on an unannotated thing, the sky, a table, can be neither right nor wrong)."""
    objects, on_truth, matched = [], 0, 0
    for image, gts in truth.items():
        masks = kept.get(image, np.zeros((0, 1, 1), bool))
        for name, g in gts.items():
            best = max((mask_iou(m, g) for m in masks), default=0.0)
            objects.append({"image": image, "object": name, "best_iou": round(best, 3), "recovered": best >= MATCH_IOU})
        annotated = np.any(np.stack(list(gts.values())), 0) if gts else None
        for m in masks:
            if annotated is not None and (m & annotated).sum() >= 0.5 * m.sum():
                on_truth += 1
                matched += max(mask_iou(m, g) for g in gts.values()) >= MATCH_IOU
    recall = sum(o["recovered"] for o in objects) / max(1, len(objects))
    return {
        "recall_at_0.7": round(recall, 3),
        "precision_at_0.7": round(matched / on_truth, 3) if on_truth else None,
        "mean_best_iou": round(float(np.mean([o["best_iou"] for o in objects])), 3) if objects else None,
        "objects": len(objects),
        "kept_targets": int(sum(len(k) for k in kept.values())),
        "kept_on_annotated": on_truth,
        "per_object": objects,
    }


def truth_at(truth_masks: dict[str, np.ndarray], content: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ground-truth masks (photo resolution) -> the letterboxed content's resolution."""
    out = {}
    for name, mask in truth_masks.items():
        t = torch.from_numpy(mask.astype(np.float32))[None, None]
        out[name] = F.interpolate(t, size=content, mode="area")[0, 0].numpy() > 0.5
    return out


def targets_sheet(photos: dict[str, np.ndarray], kept: dict[str, np.ndarray], path: Path, per_image: int = 8) -> None:
    """One row per photo: the photo, then its kept targets (best agreement first), each one the
    photo dimmed outside the target with the target's edge in yellow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    names = list(photos)
    fig, axes = plt.subplots(
        len(names), per_image + 1, figsize=((per_image + 1) * 2.0, len(names) * 2.0), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for row, name in zip(axes, names):
        photo = photos[name].astype(float) / 255
        row[0].imshow(photo)
        row[0].set_title(f"{name}: {len(kept[name])} kept", fontsize=8)
        for ax, m in zip(row[1:], kept[name][:per_image]):
            shown = np.where(m[..., None], photo, 0.25 * photo)
            shown[find_boundaries(m)] = (1, 1, 0)
            ax.imshow(shown)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def training_targets_sheet(targets, path: Path, images: int = 8, seed: int = 0) -> None:
    """targets_sheet for `images` random training images of a TargetSet (every target, merged
    wholes included)."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(targets.images), size=min(images, len(targets.images)), replace=False))
    photos, kept = {}, {}
    for i in chosen:
        h, w = targets.content[i]
        own = np.nonzero(targets.owner == i)[0]
        photos[f"train {i}"] = targets.images[i][:h, :w]
        kept[f"train {i}"] = np.array([targets.masks[m][:h, :w] > 127 for m in own]).reshape(-1, h, w)
    targets_sheet(photos, kept, path)


def measure_on_ground_truth(teacher, size: int = 256) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the pipeline on the held-out photos (measurement only: they never become training
    targets) and score it against the ground truth. Returns (score, photos, kept masks)."""
    from export.progress import tqdm
    from export.sam.data import held_out_images
    from export.sam.ground_truth import load_ground_truth
    from runtime.images import Letterbox

    truth = load_ground_truth()
    photos, kept, gts = {}, {}, {}
    for name, rgb in tqdm(held_out_images().items(), desc="targets vs ground truth"):
        box = Letterbox(*rgb.shape[:2], size)
        x = box.apply(rgb)
        h, w = box.content
        photos[name] = (x[0, :, :h, :w].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        kept[name] = object_targets(teacher, x, (h, w)).soft > 0.5
        gts[name] = truth_at({k: o.mask for k, o in truth[name].items()}, (h, w))
    return score_targets(kept, gts), photos, kept


if __name__ == "__main__":
    from export.sam.teacher import load_teacher

    args = [a for a in sys.argv[1:] if a != "--training"]
    out = Path(args[0]) if args else Path("artifacts/sam_targets")
    out.mkdir(parents=True, exist_ok=True)
    score, photos, kept = measure_on_ground_truth(load_teacher("lite-medsam"))
    (out / "sam_targets.json").write_text(json.dumps(score, indent=1) + "\n")
    targets_sheet(photos, kept, out / "sam_targets.png")
    if "--training" in sys.argv:  # the training targets too (cached by `handheld train sam`)
        from export.sam.config import TrainConfig
        from export.sam.train import load_targets

        training_targets_sheet(load_targets(TrainConfig(), 256), out / "sam_training_targets.png")
    print(
        f"targets vs ground truth: recall@0.7 {score['recall_at_0.7']:.2f} of {score['objects']} objects, "
        f"precision@0.7 {score['precision_at_0.7']} of {score['kept_on_annotated']} targets on annotated objects, "
        f"mean best IoU {score['mean_best_iou']:.2f}; {out}/sam_targets.{{json,png}}"
    )
