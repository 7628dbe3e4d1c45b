"""Distil a SqueezeSAM from a SAM-family teacher, with SAM-style simulated clicks.

Targets are the teacher's masks on offline images (export/sam/data.py). Each sample gets
1..max_clicks clicks: the first inside the object (deep inside, random), each later one in the
largest error region of the student's own current prediction (positive on misses, negative on
spill), as SAM's interactive training does. Some samples put the first click on a part and
target the merged whole object; some have no clicks and target the salient object (auto mode).
Resumable: `<out>.resume.pt` holds weights, optimizer, step and RNG state.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from export.progress import tqdm
from export.sam.composite import cutout_sources, make_composite
from export.sam.config import SqueezeSamConfig, TrainConfig, sam_preset
from export.sam.data import TargetSet, cached_targets, training_images
from export.sam.model import SqueezeSam, build, save_checkpoint
from export.sam.teacher import load_teacher
from runtime.clicks import Click, clicks_to_tensors, interior_point, next_click, render_click_maps
from runtime.errors import HandheldError

CACHE_DIR = Path.home() / ".cache" / "handheld" / "sam"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HandheldError(f"--device {name}: no CUDA GPU is visible here", "use --device cpu (or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise HandheldError(f"unknown --device {name!r}", "use auto, cpu or cuda[:N]") from None


def resume_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".resume.pt")


def read_resume_state(path: Path, device="cpu", steps: int | None = None) -> dict:
    """The resume file (weights, optimizer, step, RNG: plain tensors and ints, weights_only);
    with `steps`, refused when it has already trained that many."""
    fix = f"delete {path} to train afresh, or pass another --out"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types
        raise HandheldError(f"resume file {path} cannot be read ({type(err).__name__})", fix) from None
    if not isinstance(state, dict) or any(k not in state for k in ("model", "opt", "sched", "step", "rng")):
        raise HandheldError(f"resume file {path} is not a `handheld train sam` resume file", fix)
    if steps is not None and state["step"] >= steps:
        raise HandheldError(
            f"{path} has already trained {state['step']} steps, --steps is {steps}",
            f"pass --steps above {state['step']} to train on, or another --out to start afresh",
        )
    return state


def normalize(images_u8: torch.Tensor, config: SqueezeSamConfig, content: np.ndarray) -> torch.Tensor:
    """letterboxed uint8 [B, S, S, 3] -> normalized float [B, 3, S, S], 0 on the padding
    (content: [B, 2] unpadded rows, cols), exactly as runtime/segment.py feeds the model."""
    x = images_u8.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(config.pixel_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(config.pixel_std, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    for b, (h, w) in enumerate(content):
        x[b, :, h:, :] = 0
        x[b, :, :, w:] = 0
    return x


TRAIN_CROP = 160  # px: training sees crops (4/10 of the 256 px compute); the network is fully convolutional


def augment(images: torch.Tensor, maps: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random flip + crop for a batch of images [B,3,S,S] and target maps [B,K,S,S]: a
    window of TRAIN_CROP..S px, resized to TRAIN_CROP (objects keep 0.6x..1x their scale)."""
    size = images.shape[-1]
    if rng.random() < 0.5:
        images, maps = images.flip(-1), maps.flip(-1)
    crop = int(rng.integers(min(TRAIN_CROP, size), size + 1))
    y0, x0 = rng.integers(0, size - crop + 1, size=2)
    out = min(TRAIN_CROP, size)

    def window(t):
        return F.interpolate(
            t[..., y0 : y0 + crop, x0 : x0 + crop], size=(out, out), mode="bilinear", align_corners=False
        )

    return window(images), window(maps)


def click_maps(
    model: SqueezeSam, clicks: list[list[Click]], prev: torch.Tensor | None, size: int | None = None
) -> torch.Tensor:
    cfg = model.config
    size = size or cfg.image_size
    xy, pos, valid = clicks_to_tensors(clicks, cfg.clicks.max_clicks)
    maps = render_click_maps(xy, pos, valid, size, cfg.clicks)
    if cfg.prev_mask_channel:
        maps = torch.cat([maps, prev if prev is not None else torch.zeros(len(clicks), 1, size, size)], dim=1)
    return maps


def simulate_clicks(
    model, image, start_regions, targets, n_clicks, rng, device
) -> tuple[torch.Tensor, list[list[Click]]]:
    """Clicks for a batch: first inside start_regions[b], then corrective ones from the model's
    own predictions (no grad). Returns the final click maps [B, C, S, S] and the click lists."""
    clicks = [[] if n == 0 else [Click(*interior_point(r, rng), True)] for r, n in zip(start_regions, n_clicks)]
    prev = None
    for round_ in range(1, max(n_clicks)):
        with torch.no_grad():
            logits = model(image, click_maps(model, clicks, prev, image.shape[-1]).to(device)).float().cpu()
        prev = torch.sigmoid(logits)
        pred = (logits[:, 0] > 0).numpy()
        for b, n in enumerate(n_clicks):
            if round_ < n and (c := next_click(pred[b], targets[b], rng)) is not None:
                clicks[b].append(c)
    return click_maps(model, clicks, prev, image.shape[-1]).to(device), clicks


def sample_batch(targets: TargetSet, cfg: TrainConfig, rng: np.random.Generator, sources: np.ndarray | None = None):
    """-> images uint8 [B,S,S,3], target probs [B,S,S] (x255), click-start regions, n_clicks, content [B,2].

    With cfg.composite_prob a sample is a copy-paste composite (export/sam/composite.py) whose
    masks are exact; otherwise a training photo with its object targets. Samples without clicks
    (auto mode) are composites whenever there are cut-outs: their subject is unambiguous."""
    by_image = {i: np.nonzero(targets.owner == i)[0] for i in range(len(targets.images))}
    usable = [i for i, m in by_image.items() if len(m)]
    imgs, tgts, starts, ns, content = [], [], [], [], []
    while len(imgs) < cfg.batch_size:
        empty = rng.random() < cfg.empty_click_prob
        n = 0 if empty else int(rng.integers(1, cfg.max_clicks + 1))
        # auto-mode samples come from composites: a photo's own "salient" target is a guess
        if sources is not None and len(sources) and (empty or rng.random() < cfg.composite_prob):
            comp = make_composite(targets, sources, rng)
            part = comp.parts[rng.integers(len(comp.parts))]
            whole = empty or rng.random() < cfg.whole_object_prob
            image, hw = comp.image, comp.content
            target, start = (comp.whole if whole else part) * 255, (comp.whole if empty else part) * 255
        else:
            i = usable[rng.integers(len(usable))]
            image, hw = targets.images[i], targets.content[i]
            if empty and targets.salient[i] >= 0:
                target = start = targets.masks[targets.salient[i]]
            else:
                m = by_image[i][rng.integers(len(by_image[i]))]
                whole = targets.whole[m] if rng.random() < cfg.whole_object_prob else m
                target, start, n = targets.masks[whole], targets.masks[m], max(n, 1)
        imgs.append(image)
        tgts.append(np.asarray(target, np.uint8))
        starts.append(np.asarray(start, np.uint8))
        ns.append(n)
        content.append(hw)
    return np.stack(imgs), np.stack(tgts), np.stack(starts), ns, np.stack(content)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on the teacher's soft probabilities + soft dice. logits, target: [B, 1, S, S]."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def train_step(model, opt, targets: TargetSet, cfg: TrainConfig, rng, device, sources=None) -> float:
    imgs, tgts, starts, ns, content = sample_batch(targets, cfg, rng, sources)
    images = normalize(torch.from_numpy(imgs), model.config, content)
    maps = torch.from_numpy(np.stack([tgts, starts], 1)).float() / 255.0
    images, maps = augment(images, maps, rng)
    target, start = maps[:, :1], maps[:, 1].numpy() > 0.5
    target_bin = target[:, 0].numpy() > 0.5
    for b in range(len(ns)):  # a zoom can crop the clicked part away: click on the target instead
        if not start[b].any():
            start[b] = target_bin[b]
            if not start[b].any():
                ns[b] = 0
    images, target = images.to(device), target.to(device)
    model.eval()  # click simulation sees inference-mode BatchNorm, like a user would
    clicks, _ = simulate_clicks(model, images, start, target_bin, ns, rng, device)
    model.train()
    loss = segmentation_loss(model(images, clicks), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


RESUME_EVERY = 100  # steps between resume-file writes (an interrupted run loses at most this many)
TARGETS_VERSION = "objects-v2"  # bump when export/sam/targets.py changes what it keeps


def load_targets(cfg: TrainConfig, size: int) -> TargetSet:
    """Object targets for the training images (never the held-out photos), cached per teacher,
    image size and extra folders."""
    key = json.dumps(
        [
            sorted(str(Path(f).resolve()) for f in cfg.images),
            cfg.teacher_checkpoint and str(Path(cfg.teacher_checkpoint).resolve()),
        ]
    )
    suffix = "" if not (cfg.images or cfg.teacher_checkpoint) else "-" + hashlib.sha256(key.encode()).hexdigest()[:10]
    name = f"{cfg.teacher}-{TARGETS_VERSION}-train-{size}{suffix}"
    teacher = None if (CACHE_DIR / f"{name}.npz").is_file() else load_teacher(cfg.teacher, cfg.teacher_checkpoint)
    return cached_targets(teacher, name, training_images(cfg.images), size, CACHE_DIR)


def quality_score(summary: dict) -> float:
    """The number the best checkpoint is kept by: mean ground-truth mIoU after 1, 3 and 5 clicks.
    Auto mode and part -> whole are tracked but not selected on: on these photos a mask of nearly
    the whole frame scores well on both (`handheld eval sam` prints that baseline), and an early,
    blob-predicting model would win."""
    return float(np.mean([summary[k] for k in ("miou_1_clicks", "miou_3_clicks", "miou_5_clicks")]))


def train(cfg: TrainConfig) -> dict:
    """Train (or resume); every cfg.eval_every steps score the model against the ground truth
    and keep the best one as the fp16 checkpoint cfg.out; OUT.curve.{json,png} track it."""
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    model_cfg = sam_preset(cfg.preset)
    train_set = load_targets(cfg, model_cfg.image_size)
    sources = cutout_sources(train_set)
    model = build(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=max(0.05, 2.0 / cfg.steps)
    )
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    resume = resume_path(out)
    step, curve = 0, []
    if resume.is_file():
        state = read_resume_state(resume, device, cfg.steps)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        # a resumed run may be given more (or fewer) --steps: the one-cycle schedule is stretched to
        # the new length, everything else (its step count, momentum state) carries over
        own = {k: v for k, v in state["sched"].items() if k not in ("total_steps", "_schedule_phases")}
        sched.load_state_dict({**sched.state_dict(), **own})
        step, rng.bit_generator.state = state["step"], state["rng"]
        curve = json.loads(curve_path(out).read_text())["points"] if curve_path(out).is_file() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    best = max((p["score"] for p in curve), default=-1.0)
    start = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=step, desc="train sam")
    while step < cfg.steps:
        model.train()
        loss = train_step(model, opt, train_set, cfg, rng, device, sources)
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", best=f"{best:.3f}")
        out_of_time = cfg.time_limit_s and time.monotonic() - start > cfg.time_limit_s
        if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            model.eval()
            summary = ground_truth_summary(_cpu_copy(model))
            point = {
                "step": step,
                "seconds": round(time.monotonic() - start, 1),
                "loss": round(loss, 4),
                "score": round(quality_score(summary), 4),
                **summary,
            }
            curve.append(point)
            if point["score"] > best:
                best = point["score"]
                save_checkpoint(
                    _cpu_copy(model),
                    out,
                    half=True,
                    train_config=cfg.__dict__ | {"images": list(cfg.images)},
                    steps_done=step,
                    ground_truth=summary,
                    targets=TARGETS_VERSION,
                )
            write_curve(out, curve)
        if step % RESUME_EVERY == 0 or step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "step": step,
                    "rng": rng.bit_generator.state,
                },
                resume,
            )
        if out_of_time:
            break
    bar.close()
    kept = max(curve, key=lambda p: p["score"])
    return {
        "checkpoint": str(out),
        "steps": step,
        "best_step": kept["step"],
        "ground_truth": {k: v for k, v in kept.items() if k not in ("step", "seconds", "loss")},
        "curve": str(curve_path(out).with_suffix(".png")),
    }


def _cpu_copy(model: SqueezeSam) -> SqueezeSam:
    import copy

    return copy.deepcopy(model).cpu().eval()


def curve_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).stem + ".curve.json")


def write_curve(out: Path, curve: list[dict]) -> None:
    """OUT.curve.json (every evaluation) and OUT.curve.png (ground-truth quality against steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve_path(out).write_text(json.dumps({"points": curve}, indent=1) + "\n")
    steps = [p["step"] for p in curve]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for key, label in (
        ("miou_1_clicks", "1 click"),
        ("miou_3_clicks", "3 clicks"),
        ("miou_5_clicks", "5 clicks"),
        ("miou_auto_vs_salient", "auto mode"),
        ("part_to_whole_mean_iou", "part -> whole"),
        ("score", "kept-by score"),
    ):
        ax.plot(
            steps,
            [p[key] for p in curve],
            marker="o",
            markersize=3,
            label=label,
            linestyle="--" if key == "score" else "-",
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("IoU vs hand-checked ground truth")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(f"{Path(out).name}: held-out quality during training", fontsize=9)
    fig.tight_layout()
    fig.savefig(curve_path(out).with_suffix(".png"), dpi=80)
    plt.close(fig)


def ground_truth_summary(model) -> dict:
    """The trained model against the hand-checked ground truth (what `handheld eval sam` reports)."""
    from export.sam.data import held_out_images
    from export.sam.evaluate import evaluate_on_ground_truth
    from export.sam.ground_truth import load_ground_truth
    from runtime.segment import Segmenter

    return evaluate_on_ground_truth(Segmenter.from_model(model), load_ground_truth(), held_out_images())["summary"]
