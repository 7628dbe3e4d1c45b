"""SqueezeSAM with real weights on real photos: the LiteMedSAM teacher, the shipped checkpoint's
quality against the hand-checked ground truth, and int8 ExecuTorch parity on the held-out photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.sam.parity import INT8_MEDIAN_IOU_MIN, INT8_WORST_IOU_MIN


@pytest.fixture(scope="session")
def teacher():
    from export.sam.teacher import load_teacher

    return load_teacher("lite-medsam")


def test_teacher_loads_strictly_and_segments_inside_its_box(teacher):
    import torch.nn.functional as F

    from export.sam.data import skimage_image

    assert sum(p.numel() for p in teacher.parameters()) == 9_791_300  # the real LiteMedSAM layout
    x = torch.from_numpy(skimage_image("astronaut")).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits, _ = teacher.decode(teacher.embed(x), box=torch.tensor([[90.0, 10.0, 180.0, 110.0]]))  # the head
    mask = (logits[0, 0] > 0).numpy()
    inside = mask[10:111, 90:181].sum() / max(mask.sum(), 1)
    assert 0.05 < mask[10:111, 90:181].mean() < 0.95 and inside > 0.9


@pytest.mark.slow
def test_shipped_checkpoint_against_the_ground_truth():
    from export.sam.data import held_out_images
    from export.sam.evaluate import evaluate_on_ground_truth
    from export.sam.ground_truth import load_ground_truth
    from export.sam.predictor import eager_segmenter

    result = evaluate_on_ground_truth(eager_segmenter(), load_ground_truth(), held_out_images())
    s, floor = result["summary"], result["whole_photo_baseline"]
    # README quotes 0.203 / 0.422 / 0.591, auto 0.148, part -> whole 0.242 (eager fp32)
    assert s["miou_1_clicks"] > 0.18 and s["miou_3_clicks"] > 0.38 and s["miou_5_clicks"] > 0.55
    assert s["miou_1_clicks"] < s["miou_3_clicks"] < s["miou_5_clicks"]
    assert s["miou_auto_vs_salient"] > 0.10 and s["part_to_whole_mean_iou"] > 0.20
    assert s["miou_5_clicks"] > floor["miou_any_clicks"]  # more clicks must beat a mask of the whole photo


@pytest.fixture(scope="session")
def shipped_executorch(tmp_path_factory):
    from export.sam.config import SamExportConfig
    from export.sam.export import export_sam

    out = tmp_path_factory.mktemp("sam_real") / "executorch"
    export_sam(SamExportConfig(backend="executorch"), out)  # raises if a parity tolerance is missed
    return out


@pytest.mark.slow
def test_shipped_int8_executorch_parity_on_real_photos(shipped_executorch):
    from runtime.manifest import load_manifest

    manifest = load_manifest(shipped_executorch)
    int8 = manifest["parity"]["int8"]
    assert int8["cases"] == 15
    assert int8["median_iou"] >= INT8_MEDIAN_IOU_MIN and int8["worst_iou"] >= INT8_WORST_IOU_MIN
    assert manifest["graph"]["int8"]["delegated_subgraphs"] == 1 and not manifest["graph"]["int8"]["non_delegated_ops"]


@pytest.mark.slow
def test_segment_cli_auto_mode_on_a_real_photo(shipped_executorch, tmp_path):
    from PIL import Image

    from export.cli import main
    from export.sam.data import skimage_image

    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage_image("chelsea")).save(photo)
    out = tmp_path / "auto.png"
    assert main(["segment", str(shipped_executorch), "--image", str(photo), "--out", str(out)]) == 0
    mask = np.asarray(Image.open(tmp_path / "auto_mask.png")) > 0
    assert mask.shape == (300, 451) and 0.01 < mask.mean() < 0.9
