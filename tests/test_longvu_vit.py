"""The DINOv2 / SigLIP encoders and projector load HF (and LongVU-style) state dicts and
compute what transformers computes, on a real photo."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from export.longvu.config import DINO_PRESETS, SIGLIP_PRESETS, VitFamily
from export.longvu.projector import pooling_matrix
from export.longvu.quantize import calibration_pixels
from export.longvu.weights import load_projector, load_vit
from runtime.errors import HandheldError
from runtime.video import resize_frames


def _randomize(model, seed: int):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g) * 0.1
    return model.eval()


@pytest.fixture(scope="module")
def photo():
    import skimage.data

    return skimage.data.astronaut()[None]


@pytest.fixture(scope="module")
def hf_dinov2(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    # 70 px / 14 = a 5 x 5 position grid, run at 56 px (4 x 4): exercises the bicubic resampling
    hf = _randomize(
        Dinov2Model(
            Dinov2Config(
                hidden_size=24, num_hidden_layers=2, num_attention_heads=3, mlp_ratio=2, image_size=70, patch_size=14
            )
        ),
        0,
    )
    folder = tmp_path_factory.mktemp("dinov2")
    hf.save_pretrained(folder)
    return hf, folder


@pytest.fixture(scope="module")
def hf_siglip(tmp_path_factory):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    hf = _randomize(
        SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=36,
                num_hidden_layers=2,
                num_attention_heads=3,
                intermediate_size=52,
                image_size=40,
                patch_size=8,
            )
        ),
        1,
    )
    folder = tmp_path_factory.mktemp("siglip")
    hf.save_pretrained(folder)
    return hf, folder


def test_dinov2_matches_transformers_on_a_photo(hf_dinov2, photo):
    hf, folder = hf_dinov2
    mine, cfg = load_vit(VitFamily.DINOV2, folder, DINO_PRESETS["tiny-test"], seed=0)
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.mlp_dim, cfg.pos_grid, cfg.grid) == (24, 2, 3, 48, 5, 4)
    px = resize_frames(photo, 56)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        ref = hf(pixel_values=(px - mean) / std).last_hidden_state[:, 1:]
        out = mine(px)
    assert out.shape == (1, 16, 24)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_siglip_matches_transformers_on_a_photo(hf_siglip, photo):
    hf, folder = hf_siglip
    mine, cfg = load_vit(VitFamily.SIGLIP, folder, SIGLIP_PRESETS["tiny-test"], seed=0)
    assert (cfg.image_size, cfg.patch_size, cfg.dim, cfg.heads, cfg.grid) == (40, 8, 36, 3, 5)
    px = resize_frames(photo, 40)
    with torch.no_grad():
        ref = hf(pixel_values=(px - 0.5) / 0.5).last_hidden_state
        out = mine(px)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_longvu_style_checkpoint_finds_both_towers_and_the_projector(hf_dinov2, hf_siglip, tmp_path, photo):
    """One file, towers under long prefixes (as LongVU's checkpoint nests them), head count from the size table."""
    from safetensors.torch import save_file

    state = {f"model.vision_tower_aux_list.1.vision_tower.{k}": v for k, v in hf_dinov2[0].state_dict().items()}
    state |= {
        f"model.vision_tower_aux_list.0.vision_tower.vision_model.{k.removeprefix('vision_model.')}": v
        for k, v in hf_siglip[0].state_dict().items()
    }
    proj = torch.nn.Sequential(torch.nn.Linear(36, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    state |= {f"model.mm_projector.{k}": v for k, v in proj.state_dict().items()}
    state |= {"model.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)}  # LLM weights beside them
    path = tmp_path / "longvu.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(HandheldError, match="head count"):  # 36/24-wide towers are in no size table
        load_vit(VitFamily.SIGLIP, path, SIGLIP_PRESETS["tiny-test"], seed=0)
    (tmp_path / "config.json").write_text('{"hidden_size": 36, "num_attention_heads": 3}')
    siglip, _ = load_vit(VitFamily.SIGLIP, path, SIGLIP_PRESETS["tiny-test"], seed=0)
    with torch.no_grad():
        torch.testing.assert_close(
            siglip(resize_frames(photo, 40)),
            hf_siglip[0](pixel_values=(resize_frames(photo, 40) - 0.5) / 0.5).last_hidden_state,
            atol=1e-5,
            rtol=1e-5,
        )
    projector = load_projector(path, siglip.config, llm_dim=64, hi_grid=3, lo_grid=2, seed=0)
    torch.testing.assert_close(projector.mlp[2].weight, proj[2].weight)


def test_wrong_checkpoint_is_a_clear_error(hf_siglip, tmp_path):
    with pytest.raises(HandheldError, match="no dinov2 weights"):
        load_vit(VitFamily.DINOV2, hf_siglip[1], DINO_PRESETS["tiny-test"], seed=0)
    with pytest.raises(HandheldError, match="does not exist"):
        load_vit(VitFamily.SIGLIP, tmp_path / "nope", SIGLIP_PRESETS["tiny-test"], seed=0)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(HandheldError, match="cannot read weights"):
        load_vit(VitFamily.SIGLIP, bad, SIGLIP_PRESETS["tiny-test"], seed=0)


@pytest.mark.parametrize("src,out", [(14, 12), (14, 8), (27, 12), (27, 8), (5, 3)])
def test_pooling_matrix_is_adaptive_average_pooling(src, out):
    x = torch.randn(2, 7, src, src)
    ref = F.adaptive_avg_pool2d(x, out).flatten(2).transpose(1, 2)  # [2, out*out, 7]
    mine = torch.matmul(pooling_matrix(src, out), x.flatten(2).transpose(1, 2))
    torch.testing.assert_close(mine, ref, atol=1e-6, rtol=1e-6)


def test_random_defaults_are_seeded_and_shaped():
    a, cfg = load_vit(VitFamily.DINOV2, None, DINO_PRESETS["tiny-test"], seed=3)
    b, _ = load_vit(VitFamily.DINOV2, None, DINO_PRESETS["tiny-test"], seed=3)
    px = calibration_pixels(cfg.image_size)[:2]
    with torch.no_grad():
        assert torch.equal(a(px), b(px)) and a(px).shape == (2, cfg.grid**2, cfg.dim)
