"""Mechanics of SqueezeSAM's training data: object targets (proposals + teacher + agreement),
their score against a ground truth, copy-paste composites and the batch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.sam.data import TargetSet


def _scene(h: int = 61, w: int = 83) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Grey noise with a red rectangle and a blue ellipse: two objects with exact masks."""
    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(128, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    rect = np.zeros((h, w), bool)
    rect[9:30, 7:37] = True
    yy, xx = np.mgrid[:h, :w]
    ellipse = ((yy - 40) / 13) ** 2 + ((xx - 60) / 17) ** 2 <= 1
    img[rect] = (200, 30, 30)
    img[ellipse] = (30, 40, 190)
    return img, {"rect": rect, "ellipse": ellipse}


def test_hierarchical_groups_contain_each_object_exactly():
    from export.sam.targets import hierarchical_groups, mask_iou

    img, objects = _scene()
    groups = hierarchical_groups(img, 60)
    for name, mask in objects.items():
        assert max(mask_iou(g, mask) for g in groups) > 0.95, name
    assert any(g.all() for g in groups)  # merging ends with the whole picture


class BoxTeacher(torch.nn.Module):
    """A stand-in teacher whose mask is whatever colour-uniform region fills most of its box:
    objects' boxes return the object; boxes of background chunks return noise-like blobs."""

    image_size = 64

    def __init__(self, scene: np.ndarray):
        super().__init__()
        self.scene = torch.from_numpy(scene.astype(np.float32))

    def embed(self, x):
        return x

    def decode(self, embedding, box):
        out = []
        size = embedding.shape[-1]
        for x0, y0, x1, y1 in (box * size / self.image_size).round().long().tolist():
            logits = torch.full((size, size), -8.0)
            crop = self.scene[y0 : y1 + 1, x0 : x1 + 1]
            if crop.numel():
                colour = crop.reshape(-1, 3).median(0).values
                inside = (self.scene - colour).abs().amax(-1) < 40
                inside[:y0], inside[y1 + 1 :], inside[:, :x0], inside[:, x1 + 1 :] = False, False, False, False
                logits[inside] = 8.0
            out.append(logits)
        logits = torch.stack(out)[:, None]
        return logits, torch.ones(len(out), 1)


def test_object_targets_keep_what_teacher_and_proposals_agree_on():
    from export.sam.targets import mask_iou, object_targets, score_targets

    img, objects = _scene(64, 64)
    objects = {k: v for k, v in objects.items()}
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    found = object_targets(BoxTeacher(img), x, (64, 64))
    kept = found.soft > 0.5
    assert found.prompts >= 2 and len(kept) >= 2 and (found.agreement >= 0.6).all()
    for name, mask in objects.items():
        assert max(mask_iou(k, mask) for k in kept) > 0.85, name
    score = score_targets({"scene": kept}, {"scene": objects})
    assert score["recall_at_0.7"] == 1.0 and score["objects"] == 2


def test_score_targets_counts_recall_and_precision():
    from export.sam.targets import score_targets

    a = np.zeros((10, 10), bool)
    a[:5] = True
    b = np.zeros((10, 10), bool)
    b[:, :3] = True
    half = np.zeros((10, 10), bool)
    half[:2] = True  # on `a`, IoU 0.4: a miss
    off = np.zeros((10, 10), bool)
    off[7:, 5:] = True  # on nothing annotated: not counted
    s = score_targets({"p": np.stack([a, half, off])}, {"p": {"a": a, "b": b}})
    assert s["recall_at_0.7"] == 0.5 and s["kept_on_annotated"] == 2 and s["precision_at_0.7"] == 0.5


def _target_set(size: int = 40) -> TargetSet:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, size, size, 3), dtype=np.uint8)
    masks, owner = [], []
    for i in range(3):
        m = np.zeros((size, size), np.uint8)
        m[5 + i : 20 + i, 8 : 25 + i] = 255
        masks.append(m)
        owner.append(i)
    return TargetSet(
        images,
        np.stack(masks),
        np.array(owner),
        np.arange(3),
        np.arange(3),
        np.array([[size, size], [size, 31], [29, size]]),
    )


def test_composites_carry_exact_masks_and_a_whole():
    from export.sam.composite import cutout_sources, make_composite

    targets = _target_set()
    sources = cutout_sources(targets)
    assert list(sources) == [0, 1, 2]
    rng = np.random.default_rng(1)
    held = 0
    for _ in range(20):
        c = make_composite(targets, sources, rng)
        h, w = c.content
        assert c.image.shape == (40, 40, 3) and c.image[h:].max(initial=0) == 0 and c.image[:, w:].max(initial=0) == 0
        assert np.allclose(c.whole, np.clip(sum(c.parts), 0, 1))
        assert (c.parts[0] > 0.5).sum() > 10  # the subject stays visible
        if len(c.parts) == 2:
            held += 1
            assert ((c.parts[0] > 0.5) & (c.parts[1] > 0.5)).sum() == 0  # what is held covers the holder
        # where the subject is fully opaque, the pixels are the cut-out's, not the background's
        bg = targets.images[[i for i in range(3) if (c.image[:h, :w] == targets.images[i][:h, :w]).mean() > 0.3][0]]
        solid = c.whole[:h, :w] > 0.99
        assert (c.image[:h, :w][solid] != bg[:h, :w][solid]).any()
    assert 0 < held < 20


def test_sampler_mixes_photos_and_composites_and_auto_mode_uses_composites():
    from export.sam.composite import cutout_sources
    from export.sam.config import TrainConfig
    from export.sam.train import sample_batch

    targets = _target_set()
    cfg = TrainConfig(batch_size=32, empty_click_prob=0.5, composite_prob=0.5)
    imgs, tgts, starts, ns, content = sample_batch(targets, cfg, np.random.default_rng(0), cutout_sources(targets))
    assert imgs.shape == (32, 40, 40, 3) and tgts.shape == starts.shape == (32, 40, 40)
    from_photos = [b for b in range(32) if any((imgs[b] == im).all() for im in targets.images)]
    assert 0 < len(from_photos) < 32
    assert all(ns[b] >= 1 for b in from_photos)  # no-click samples are composites
    assert all((tgts[b] > 127).any() for b in range(32))


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_composite_prob_extremes(prob):
    from export.sam.composite import cutout_sources
    from export.sam.config import TrainConfig
    from export.sam.train import sample_batch

    targets = _target_set()
    cfg = TrainConfig(batch_size=16, empty_click_prob=0.0, composite_prob=prob)
    imgs, *_ = sample_batch(targets, cfg, np.random.default_rng(2), cutout_sources(targets))
    photos = sum(any((imgs[b] == im).all() for im in targets.images) for b in range(16))
    assert photos == (16 if prob == 0.0 else 0)


def test_training_tracks_ground_truth_keeps_the_best_and_resumes(tmp_path, monkeypatch):
    import json

    import export.sam.train as train_mod
    from export.sam.config import TrainConfig
    from export.sam.model import load_checkpoint

    targets = _target_set(48)
    monkeypatch.setattr(train_mod, "load_targets", lambda cfg, size: targets)
    scores = iter([0.2, 0.5, 0.3, 0.4])

    def fake_summary(model):  # the real scorer is tested in test_sam_ground_truth.py
        v = next(scores)
        return {
            "miou_1_clicks": v,
            "miou_3_clicks": v,
            "miou_5_clicks": v,
            "miou_auto_vs_salient": v,
            "part_to_whole_mean_iou": v,
            "part_to_whole_cases_at_0.7": "0/1",
            "whole_objects": 1,
            "part_cases": 1,
        }

    monkeypatch.setattr(train_mod, "ground_truth_summary", fake_summary)
    out = tmp_path / "sam.pt"
    cfg = TrainConfig(preset="tiny-test", steps=4, batch_size=2, eval_every=2, out=str(out), max_clicks=2, device="cpu")
    result = train_mod.train(cfg)
    assert result["best_step"] == 4 and result["ground_truth"]["score"] == 0.5
    assert load_checkpoint(out) is not None and torch.load(out, weights_only=True)["steps_done"] == 4
    # resume: two more evaluations, neither better, so the checkpoint stays the step-4 one
    result = train_mod.train(TrainConfig(**{**cfg.__dict__, "steps": 8}))
    points = json.loads(train_mod.curve_path(out).read_text())["points"]
    assert [p["step"] for p in points] == [2, 4, 6, 8] and result["best_step"] == 4
    assert torch.load(out, weights_only=True)["steps_done"] == 4
    assert train_mod.curve_path(out).with_suffix(".png").stat().st_size > 1000
