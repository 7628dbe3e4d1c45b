"""The hand-checked ground truth for SqueezeSAM's held-out photos, and the scorer that uses it."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def truth():
    from export.sam.ground_truth import load_ground_truth

    return load_ground_truth()


@pytest.fixture(scope="module")
def photos():
    from export.sam.data import held_out_images

    return held_out_images()


def test_the_ground_truth_covers_every_held_out_photo(truth, photos):
    from export.sam.data import HELD_OUT_IMAGES
    from export.sam.ground_truth import part_cases

    assert set(truth) == set(HELD_OUT_IMAGES)
    assert sum(len(objects) for objects in truth.values()) >= 25
    assert len(part_cases(truth)) >= 8
    for image_name, objects in truth.items():
        assert [o.name for o in objects.values() if o.salient and o.whole is None] != [], image_name
        assert sum(o.salient for o in objects.values()) == 1, image_name
        for obj in objects.values():
            assert obj.mask.shape == photos[image_name].shape[:2] and obj.mask.sum() > 50, (image_name, obj.name)
            if obj.whole:
                whole = objects[obj.whole]
                assert whole.whole is None and (obj.mask & ~whole.mask).sum() == 0, (image_name, obj.name)


def test_stored_masks_are_what_the_recipe_builds(truth, photos):
    import json

    from export.sam.evaluate import iou
    from export.sam.ground_truth import RECIPE, build_masks

    built = build_masks(json.loads(RECIPE.read_text()), photos)
    for image_name, objects in truth.items():
        for name, obj in objects.items():
            assert iou(built[image_name][name], obj.mask) >= 0.99, (image_name, name)


def test_snapping_moves_a_rough_outline_onto_the_object_edge():
    from skimage.draw import disk

    from export.sam.evaluate import iou
    from export.sam.ground_truth import outline_mask, snap_to_edges

    rng = np.random.default_rng(0)
    image = (rng.normal(110, 12, (121, 137, 3))).clip(0, 255).astype(np.uint8)
    true = np.zeros(image.shape[:2], bool)
    true[disk((60, 70), 30, shape=true.shape)] = True
    image[true] = (200, 40, 30)
    rough = outline_mask({"ellipse": [73, 58, 32, 27]}, true.shape)  # off by up to 5 pixels, wrong shape
    snapped = snap_to_edges(image, rough, band=6)
    assert iou(rough, true) < 0.85
    assert iou(snapped, true) > 0.97


class _Oracle:
    """A segmenter that knows the answers: the whole object under the first click; the salient one in auto mode."""

    def __init__(self, truth, perfect: bool):
        self.truth, self.perfect, self.objects = truth, perfect, None

    def set_image(self, image):
        self.objects = next(
            objs for objs in self.truth.values() if next(iter(objs.values())).mask.shape == image.shape[:2]
        )

    def _result(self, mask):
        from runtime.segment import Segmentation

        return Segmentation(mask if self.perfect else np.zeros_like(mask), np.zeros((1, 1), np.float32))

    def predict(self, clicks):
        first = clicks[0]
        wholes = [o for o in self.objects.values() if o.whole is None and o.mask[int(first.y), int(first.x)]]
        return self._result(wholes[0].mask)

    def auto(self):
        return self._result(next(o.mask for o in self.objects.values() if o.salient))


@pytest.mark.parametrize("perfect", [True, False])
def test_the_scorer_gives_an_oracle_full_marks_and_an_empty_segmenter_none(truth, photos, perfect):
    from export.sam.evaluate import evaluate_on_ground_truth

    s = evaluate_on_ground_truth(_Oracle(truth, perfect), truth, photos)["summary"]
    want = 1.0 if perfect else 0.0
    assert (
        s["miou_1_clicks"] == s["miou_5_clicks"] == s["miou_auto_vs_salient"] == s["part_to_whole_mean_iou"] == want
    ), s
    assert s["part_to_whole_cases_at_0.7"] == (
        f"{s['part_cases']}/{s['part_cases']}" if perfect else f"0/{s['part_cases']}"
    )


def test_eval_sam_writes_the_numbers_and_the_contact_sheet(tmp_path, capsys):
    import json

    import torch

    from export.cli import main
    from export.sam.config import SAM_PRESETS
    from export.sam.model import build, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build(SAM_PRESETS["tiny-test"]).eval(), tmp_path / "tiny.pt", half=False)
    out = tmp_path / "eval"
    assert main(["eval", "sam", str(tmp_path / "tiny.pt"), "--out", str(out)]) == 0
    assert "mIoU 1 / 3 / 5 clicks" in capsys.readouterr().out
    result = json.loads((out / "eval.json").read_text())
    assert result["summary"]["whole_objects"] >= 10 and result["summary"]["part_cases"] >= 8
    assert all(0.0 <= v <= 1.0 for v in result["part_to_whole"].values())
    assert (out / "contact_sheet.png").stat().st_size > 10_000
    assert main(["eval", "sam", str(tmp_path / "tiny.pt"), "--out", str(out)]) == 2  # exists: --force
    assert main(["eval", "sam", str(tmp_path / "tiny.pt"), "--out", str(out), "--force"]) == 0  # its own folder


def test_a_training_run_reports_its_model_against_the_ground_truth():
    import torch

    from export.sam.config import SAM_PRESETS
    from export.sam.model import build
    from export.sam.train import ground_truth_summary

    torch.manual_seed(0)
    summary = ground_truth_summary(build(SAM_PRESETS["tiny-test"]).eval())
    assert summary["whole_objects"] >= 10 and summary["part_cases"] >= 8
    assert 0.0 <= summary["miou_1_clicks"] <= 1.0 and 0.0 <= summary["miou_auto_vs_salient"] <= 1.0


def test_the_whole_photo_baseline_is_what_a_full_mask_scores(truth, photos):
    from export.sam.evaluate import evaluate_on_ground_truth, whole_photo_baseline

    class WholePhoto(_Oracle):
        def predict(self, clicks):
            return self._result(np.ones(next(iter(self.objects.values())).mask.shape, bool))

        def auto(self):
            return self.predict([])

    result = evaluate_on_ground_truth(WholePhoto(truth, True), truth, photos)
    base = whole_photo_baseline(truth)
    assert result["whole_photo_baseline"] == base
    s = result["summary"]
    assert (
        abs(s["miou_1_clicks"] - base["miou_any_clicks"]) < 1e-3
        and abs(s["miou_5_clicks"] - base["miou_any_clicks"]) < 1e-3
    )
    assert abs(s["miou_auto_vs_salient"] - base["miou_auto_vs_salient"]) < 1e-3
    assert abs(s["part_to_whole_mean_iou"] - base["part_to_whole_mean_iou"]) < 1e-3
    assert 0.1 < base["miou_any_clicks"] < 0.9
