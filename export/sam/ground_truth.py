"""Hand-checked ground truth for SqueezeSAM's held-out photos: every quality number of the
segmenter is measured against these masks, not against a teacher's.

The recipe (`ground_truth_masks/recipe.json`) holds outlines placed by hand in image pixels,
read off each photo on a 20-pixel grid. An outline is only roughly on the object's edge, so
`snap_to_edges` lets a random walker on the photo's colours decide the pixels within `band`
pixels either side of it: what lies deeper inside is object, what lies further out is not.
Wholes hold their parts (a click on a part selects the whole), objects in front are
subtracted from the ones behind. The masks are stored as PNGs beside the recipe and were
checked by eye on overlays (`python -m export.sam.ground_truth [OUT_DIR [SHEET.png]]` rebuilds
them and draws the contact sheet, docs/sam_ground_truth.png in the repo).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GT_DIR = Path(__file__).parent / "ground_truth_masks"
RECIPE = GT_DIR / "recipe.json"


@dataclass(frozen=True)
class GroundTruthObject:
    image: str
    name: str
    mask: np.ndarray  # [H, W] bool, the photo's own resolution
    whole: str | None  # the object a click on this part must select; None: a whole object
    salient: bool  # the photo's subject: what auto mode must find


def outline_mask(spec: dict, shape: tuple[int, int]) -> np.ndarray:
    """A recipe entry's outline (polygon [[x, y], ...] or ellipse [cx, cy, rx, ry]) -> [H, W] bool."""
    from skimage.draw import ellipse, polygon

    mask = np.zeros(shape, bool)
    if "ellipse" in spec:
        cx, cy, rx, ry = spec["ellipse"]
        rr, cc = ellipse(cy, cx, ry, rx, shape=shape)
    else:
        xy = np.asarray(spec["outline"], float)
        rr, cc = polygon(xy[:, 1], xy[:, 0], shape=shape)
    mask[rr, cc] = True
    return mask


def snap_to_edges(image: np.ndarray, rough: np.ndarray, band: int) -> np.ndarray:
    """image [H, W, 3] uint8, rough [H, W] bool -> the mask whose boundary a random walker on the
    image's colours placed inside the band of `band` pixels around `rough`'s boundary."""
    import warnings

    from scipy.ndimage import binary_dilation, binary_erosion
    from skimage.morphology import disk
    from skimage.segmentation import random_walker

    inside = binary_erosion(rough, disk(band))
    outside = ~binary_dilation(rough, disk(band))
    if not inside.any():  # thinner than the band: the outline's own pixels are the seed
        inside = rough
    ys, xs = np.nonzero(~outside)
    y0, y1 = max(ys.min() - 2, 0), min(ys.max() + 3, rough.shape[0])
    x0, x1 = max(xs.min() - 2, 0), min(xs.max() + 3, rough.shape[1])
    labels = np.zeros((y1 - y0, x1 - x0), np.int32)
    labels[outside[y0:y1, x0:x1]] = 2
    labels[inside[y0:y1, x0:x1]] = 1
    crop = image[y0:y1, x0:x1, :3].astype(np.float64) / 255.0
    with warnings.catch_warnings():  # a sharp beta leaves probabilities a hair outside [0, 1]: harmless
        warnings.simplefilter("ignore", UserWarning)
        result = random_walker(crop, labels, beta=2000, mode="cg_j", tol=1e-4, channel_axis=-1)
    mask = np.zeros_like(rough)
    mask[y0:y1, x0:x1] = result == 1
    return mask


def build_masks(recipe: dict, images: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The recipe's objects snapped to each photo's edges: {image: {object: [H, W] bool}}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for image_name, objects in recipe["images"].items():
        photo = images[image_name]
        shape = photo.shape[:2]
        masks = {
            name: snap_to_edges(photo, outline_mask(spec, shape), spec.get("band", recipe["default_band"]))
            for name, spec in objects.items()
        }
        for name, spec in objects.items():  # wholes hold their parts
            if spec.get("whole"):
                masks[spec["whole"]] |= masks[name]
        for name, spec in objects.items():  # what is in front is not this object
            for front in spec.get("subtract", []):
                masks[name] &= ~masks[front]
        out[image_name] = masks
    return out


def mask_file(image: str, name: str) -> str:
    return f"{image}__{name.replace(' ', '_')}.png"


def write_masks(masks: dict[str, dict[str, np.ndarray]], folder: Path) -> None:
    from PIL import Image

    for image_name, objects in masks.items():
        for name, mask in objects.items():
            Image.fromarray(mask).save(Path(folder) / mask_file(image_name, name), optimize=True)


def load_ground_truth(folder: Path = GT_DIR) -> dict[str, dict[str, GroundTruthObject]]:
    """{image: {object: GroundTruthObject}} from the stored PNGs and the recipe beside them."""
    from PIL import Image

    recipe = json.loads((Path(folder) / RECIPE.name).read_text())
    return {
        image_name: {
            name: GroundTruthObject(
                image_name,
                name,
                np.array(Image.open(Path(folder) / mask_file(image_name, name))).astype(bool),
                spec.get("whole"),
                bool(spec.get("salient")),
            )
            for name, spec in objects.items()
        }
        for image_name, objects in recipe["images"].items()
    }


def part_cases(truth: dict[str, dict[str, GroundTruthObject]]) -> list[tuple[GroundTruthObject, GroundTruthObject]]:
    """(part, whole) pairs: a click on the part must select the whole."""
    return [(obj, objects[obj.whole]) for objects in truth.values() for obj in objects.values() if obj.whole]


def contact_sheet(
    images: dict[str, np.ndarray], masks: dict[str, dict[str, np.ndarray]], path: Path, recipe: dict | None = None
) -> None:
    """One tile per object: the photo dimmed outside the mask, the mask's edge in yellow and
    (with `recipe`) the hand-placed outline in cyan, titled with the object's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    tiles = [(i, n) for i, objects in masks.items() for n in objects]
    cols = 6
    rows = -(-len(tiles) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 2.6))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image_name, name) in zip(axes.flat, tiles):
        photo, mask = images[image_name][..., :3].astype(float) / 255, masks[image_name][name]
        shown = np.where(mask[..., None], photo, 0.25 * photo)
        shown[find_boundaries(mask)] = (1, 1, 0)
        if recipe is not None:
            shown[find_boundaries(outline_mask(recipe["images"][image_name][name], mask.shape))] = (0, 1, 1)
        ax.imshow(shown)
        spec = recipe["images"][image_name][name] if recipe else {}
        role = "salient" if spec.get("salient") else (f"part of {spec['whole']}" if spec.get("whole") else "")
        ax.set_title(f"{image_name}: {name}\n{role}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


if __name__ == "__main__":
    from export.sam.data import held_out_images

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else GT_DIR
    sheet = Path(sys.argv[2]) if len(sys.argv) > 2 else out / "contact_sheet.png"
    out.mkdir(parents=True, exist_ok=True)
    recipe = json.loads(RECIPE.read_text())
    photos = held_out_images()
    built = build_masks(recipe, photos)
    write_masks(built, out)
    contact_sheet(photos, built, sheet, recipe)
    print(f"{sum(len(v) for v in built.values())} masks in {out}, contact sheet {sheet}")
