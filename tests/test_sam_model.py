"""SqueezeSAM mechanics on tiny random models with odd sizes: model, clicks, data, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.sam.config import SAM_PRESETS, SqueezeSamConfig, TrainConfig
from export.sam.data import merge_whole_objects
from export.sam.model import build, load_checkpoint, save_checkpoint
from runtime.clicks import Click, ClickEncoding, clicks_to_tensors, interior_point, next_click, render_click_maps
from runtime.errors import HandheldError
from runtime.images import Letterbox, load_image, to_rgb
from runtime.segment import Segmenter

TINY = SAM_PRESETS["tiny-test"]


def tiny_model(seed=0, config=TINY):
    torch.manual_seed(seed)
    return build(config).eval()


def test_forward_shapes_and_clicks_change_the_mask():
    model = tiny_model()
    s = TINY.image_size
    image = torch.randn(1, 3, s, s)
    none = render_click_maps(*clicks_to_tensors([[]], 4), s, TINY.clicks)
    one = render_click_maps(*clicks_to_tensors([[Click(10.5, 20.5)]], 4), s, TINY.clicks)
    a, b = model(image, none), model(image, one)
    assert a.shape == (1, 1, s, s)
    assert (a - b).abs().max() > 1e-4  # early fusion: a click reaches the logits


def test_prev_mask_preset_takes_three_click_channels():
    cfg = SqueezeSamConfig(image_size=40, widths=(3, 5, 7), prev_mask_channel=True)
    model = tiny_model(config=cfg)
    assert model(torch.randn(2, 3, 40, 40), torch.rand(2, 3, 40, 40)).shape == (2, 1, 40, 40)


def test_click_maps_gaussian_max_and_sign():
    enc = ClickEncoding(sigma_px=3.0)
    xy, pos, valid = clicks_to_tensors([[Click(5.5, 7.5, True), Click(20.5, 3.5, False)]], 4)
    maps = render_click_maps(xy, pos, valid, 33, enc)
    assert maps.shape == (1, 2, 33, 33)
    assert maps[0, 0, 7, 5] == pytest.approx(1.0) and maps[0, 1, 3, 20] == pytest.approx(1.0)
    assert maps[0, 0, 3, 20] < 1e-5 and maps[0, 1, 7, 5] < 1e-5  # 15.5 px = 5 sigma away
    assert maps[0, 0, 7, 8] == pytest.approx(np.exp(-9 / 18), rel=1e-5)  # 3 px away


def test_simulated_clicks_first_inside_then_in_errors():
    target = np.zeros((31, 37), bool)
    target[5:20, 4:30] = True
    x, y = interior_point(target)
    assert target[int(y), int(x)]
    pred = target.copy()
    pred[5:20, 4:12] = False  # missed the left part -> positive click there
    c = next_click(pred, target)
    assert c.positive and 4 <= c.x < 12
    spill = target.copy()
    spill[22:30, :] = True  # background added -> negative click there
    assert not next_click(spill, target).positive


def test_whole_object_merging_maps_parts_to_their_container():
    person = np.zeros((20, 20), bool)
    person[2:18, 5:15] = True
    shirt = np.zeros_like(person)
    shirt[8:12, 6:14] = True
    other = np.zeros_like(person)
    other[0:3, 16:20] = True
    merged, whole = merge_whole_objects(np.stack([person, shirt, other]))
    assert whole[0] == 0 and whole[2] == 2
    assert whole[1] >= 3 and (merged[whole[1]] == (person | shirt)).all()


def test_letterbox_and_normalization_zero_padding():
    rgb = np.full((30, 60, 3), 200, np.uint8)
    box = Letterbox(30, 60, 48)
    x = box.normalized(rgb, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert box.content == (24, 48)
    assert x[0, :, 24:].abs().max() == 0 and x[0, :, :24].min() > 0
    assert box.to_image(torch.ones(48, 48)).shape == (30, 60)


def test_gray_and_rgba_are_converted_bad_shapes_rejected(tmp_path):
    from PIL import Image

    assert to_rgb(np.zeros((5, 7), np.uint8)).shape == (5, 7, 3)
    assert to_rgb(np.zeros((5, 7, 4), np.uint8)).shape == (5, 7, 3)
    Image.fromarray(np.zeros((9, 11, 4), np.uint8), "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 11), np.uint8), "L").save(tmp_path / "g.png")
    assert load_image(tmp_path / "a.png").shape == (9, 11, 3) and load_image(tmp_path / "g.png").shape == (9, 11, 3)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(HandheldError, match="cannot read image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(HandheldError, match="empty"):
        to_rgb(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(HandheldError, match="not a gray, RGB or RGBA"):
        to_rgb(np.zeros((4, 4, 5), np.uint8))


def test_clicks_outside_the_image_are_rejected():
    model = tiny_model()
    seg = Segmenter(lambda i, c: model(torch.from_numpy(i), torch.from_numpy(c)).detach().numpy(), TINY.input_spec)
    seg.set_image(np.zeros((21, 35, 3), np.uint8))
    assert seg.predict([Click(34.5, 20.5)]).mask.shape == (21, 35)
    with pytest.raises(HandheldError, match="outside the 35x21 image"):
        seg.predict([Click(35.5, 3.0)])
    with pytest.raises(HandheldError, match="at most"):
        seg.predict([Click(1, 1)] * (TINY.clicks.max_clicks + 1))


def test_checkpoint_round_trip_and_wrong_architecture(tmp_path):
    model = tiny_model(seed=3)
    save_checkpoint(model, tmp_path / "c.pt", half=False)
    again = load_checkpoint(tmp_path / "c.pt")
    x, c = torch.randn(1, 3, 48, 48), torch.rand(1, 2, 48, 48)
    torch.testing.assert_close(again(x, c), model(x, c))
    torch.save(model.state_dict(), tmp_path / "raw.pt")  # a bare state dict: no header
    with pytest.raises(HandheldError, match="not a SqueezeSAM checkpoint"):
        load_checkpoint(tmp_path / "raw.pt")
    blob = torch.load(tmp_path / "c.pt", weights_only=True)
    blob["config"]["widths"] = [5, 7, 11]
    torch.save(blob, tmp_path / "wrong.pt")
    with pytest.raises(HandheldError, match="do not match the architecture"):
        load_checkpoint(tmp_path / "wrong.pt")


def test_teacher_rejects_a_checkpoint_of_another_architecture(tmp_path):
    from export.sam.teacher import load_teacher

    torch.save(tiny_model().state_dict(), tmp_path / "not_sam.pth")
    with pytest.raises(HandheldError, match="not a LiteMedSAM checkpoint"):
        load_teacher("lite-medsam", str(tmp_path / "not_sam.pth"))
    with pytest.raises(HandheldError, match="unknown teacher"):
        load_teacher("sam-vit-z")


def test_config_validation():
    with pytest.raises(HandheldError, match="divisible"):
        SqueezeSamConfig(image_size=50, widths=(4, 4, 4))
    with pytest.raises(HandheldError, match="probability"):
        TrainConfig(empty_click_prob=1.5)
    assert SqueezeSamConfig.from_dict(TINY.to_dict()) == TINY
    paper = build(SAM_PRESETS["paper"])
    assert 8e6 < sum(p.numel() for p in paper.parameters()) < 16e6  # ~14 MB at int8, like the paper
