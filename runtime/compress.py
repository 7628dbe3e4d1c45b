"""LongVU's spatiotemporal compression as pure functions over feature tensors.

Stages, in order (arXiv 2410.17434, section 3):
1. temporal_dedup: in windows of 16 sampled frames, drop frames whose DINO features are
   >= 0.83 cosine-similar (mean over patch positions) to a frame already kept.
2. cross-modal query: the top-k frames by mean(visual . text^T) keep full resolution (144
   tokens), the rest 64; k is whatever the remaining context budget pays for.
3. spatial_compress (STC): in chunks of 8 frames, later frames drop tokens whose cosine to the
   same position of the chunk's first frame is >= 0.8.
4. truncate_uniform: if still over budget, keep evenly spaced tokens of the whole sequence.

Nothing here runs a model: the eager pipeline and the exported-artifact runtime feed the same
functions, so their selections can be compared exactly. Similarities are computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F

from runtime.errors import HandheldError, parse_enum


class DedupRule(str, Enum):
    # a frame is dropped when it is >= threshold similar to a frame already kept in its window
    GREEDY = "greedy"
    # the paper's wording: drop frames whose mean similarity to the window's other frames is
    # >= threshold (the least similar frame of a window always survives)
    WINDOW_MEAN = "window-mean"


@dataclass(frozen=True)
class CompressConfig:
    dedup_window: int = 16  # temporal reduction windows, in sampled frames
    dedup_threshold: float = 0.83  # DINO frame similarity at or above which a frame is redundant
    dedup_rule: DedupRule = DedupRule.GREEDY
    hi_grid: int = 12  # full-resolution frames: 12 x 12 = 144 tokens
    lo_grid: int = 8  # every other frame: 8 x 8 = 64 tokens
    stc_chunk: int = 8  # spatial token compression chunks, in frames
    stc_threshold: float = 0.8  # token cosine to the chunk's first frame at or above which it is dropped

    def __post_init__(self):
        object.__setattr__(self, "dedup_rule", parse_enum(DedupRule, self.dedup_rule, "dedup rule"))
        for name in ("dedup_threshold", "stc_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise HandheldError(
                    f"{name}={getattr(self, name)} is not a cosine similarity", "use a value in [-1, 1]"
                )
        if self.dedup_window < 1 or self.stc_chunk < 1:
            raise HandheldError("dedup_window and stc_chunk must be >= 1", "use positive frame counts")
        if not 0 < self.lo_grid <= self.hi_grid:
            raise HandheldError(f"lo_grid={self.lo_grid}, hi_grid={self.hi_grid}", "use 0 < lo_grid <= hi_grid")

    @property
    def hi_tokens(self) -> int:
        return self.hi_grid**2

    @property
    def lo_tokens(self) -> int:
        return self.lo_grid**2


def frame_similarity(feats: torch.Tensor) -> torch.Tensor:
    """feats: [T, N, D] patch features -> [T, T] mean over the N positions of the per-position cosine."""
    unit = F.normalize(feats.double(), dim=-1)
    return torch.einsum("ind,jnd->ij", unit, unit) / feats.shape[1]


def _dedup_window_greedy(sim: torch.Tensor, threshold: float) -> list[int]:
    kept: list[int] = []
    for i in range(sim.shape[0]):
        if not kept or bool(sim[i, kept].max() < threshold):
            kept.append(i)
    return kept


def _dedup_window_mean(sim: torch.Tensor, threshold: float) -> list[int]:
    n = sim.shape[0]
    if n == 1:
        return [0]
    mean_to_others = (sim.sum(dim=1) - sim.diagonal()) / (n - 1)
    kept = [i for i in range(n) if mean_to_others[i] < threshold]
    return kept or [int(torch.argmin(mean_to_others))]


def temporal_dedup(feats: torch.Tensor, window: int, threshold: float, rule: DedupRule = DedupRule.GREEDY) -> list[int]:
    """feats: [T, N, D] DINO patch features of the sampled frames -> kept frame indices (sorted).

    Windows are consecutive, non-overlapping runs of `window` frames; each keeps >= 1 frame.
    """
    if feats.ndim != 3 or feats.shape[0] == 0:
        raise HandheldError(
            f"temporal_dedup needs [T>0, N, D] features, got {tuple(feats.shape)}", "decode at least one frame"
        )
    pick = _dedup_window_greedy if rule is DedupRule.GREEDY else _dedup_window_mean
    kept: list[int] = []
    for start in range(0, feats.shape[0], window):
        sim = frame_similarity(feats[start : start + window])
        kept += [start + i for i in pick(sim, threshold)]
    return kept


def query_scores(hi_tokens: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """hi_tokens: [T, Nh, dim] projected full-resolution tokens; text_embeds: [L, dim] -> [T] mean(v . t)."""
    return torch.einsum("tnd,ld->tnl", hi_tokens.double(), text_embeds.double()).mean(dim=(1, 2))


def full_res_count(n_frames: int, budget: int, hi_tokens: int, lo_tokens: int) -> int:
    """How many frames can be upgraded from lo_tokens to hi_tokens within `budget` visual tokens."""
    if hi_tokens == lo_tokens:
        return n_frames
    spare = budget - n_frames * lo_tokens
    return max(0, min(n_frames, spare // (hi_tokens - lo_tokens)))


def top_k_frames(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k highest scores (ties -> earlier frame), sorted by time."""
    order = sorted(range(scores.shape[0]), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b: [N, dim] tokens at the same grid positions -> [N] cosine per position."""
    return F.cosine_similarity(a.double(), b.double(), dim=-1)


def spatial_compress(
    hi: torch.Tensor, lo: torch.Tensor, full_res: list[bool], chunk: int, threshold: float
) -> list[torch.Tensor]:
    """STC. hi: [T, Nh, dim], lo: [T, Nl, dim] tokens of the kept frames; full_res[t] picks hi or lo.

    Returns, per frame, the kept token positions (int64, ascending) within its own resolution.
    A later frame is compared with the chunk's first frame at its own resolution, so a low-res
    frame is checked against the first frame's low-res tokens.
    """
    kept = []
    for t in range(hi.shape[0]):
        own = hi[t] if full_res[t] else lo[t]
        first = (t // chunk) * chunk
        if t == first:
            kept.append(torch.arange(own.shape[0]))
            continue
        ref = hi[first] if full_res[t] else lo[first]
        kept.append(torch.nonzero(token_cosine(own, ref) < threshold).flatten())
    return kept


def truncate_uniform(kept: list[torch.Tensor], budget: int) -> list[torch.Tensor]:
    """Keep `budget` evenly spaced tokens of the concatenated sequence when it is longer."""
    total = sum(int(k.numel()) for k in kept)
    if total <= budget:
        return kept
    flat = torch.div(torch.arange(budget) * total, budget, rounding_mode="floor")  # unique, ascending
    keep_mask = torch.zeros(total, dtype=torch.bool)
    keep_mask[flat] = True
    out, offset = [], 0
    for k in kept:
        out.append(k[keep_mask[offset : offset + k.numel()]])
        offset += k.numel()
    return out


@dataclass
class Selection:
    """What the compression kept; frame indices refer to the sampled frames."""

    n_sampled: int
    frames: list[int]  # kept after temporal dedup (time order)
    full_res: list[int]  # subset of frames at hi resolution
    tokens: list[list[int]]  # per kept frame: token positions within its resolution's grid
    counts: dict[str, int] = field(default_factory=dict)  # tokens (or frames) after each stage

    @property
    def n_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)

    def to_dict(self) -> dict:
        return {
            "n_sampled": self.n_sampled,
            "frames": self.frames,
            "full_res": self.full_res,
            "tokens": self.tokens,
            "counts": self.counts,
        }


def compress(
    dino_feats: torch.Tensor,
    visual_tokens,
    text_embeds: torch.Tensor,
    budget: int,
    cfg: CompressConfig,
) -> tuple[Selection, torch.Tensor]:
    """Run the four stages.

    dino_feats: [T, N, D] for every sampled frame; visual_tokens(frames) -> (hi [K, Nh, dim], lo
    [K, Nl, dim]) encodes only the frames that survive dedup (SigLIP is the expensive encoder);
    text_embeds: [L, dim] question embeddings; budget: visual tokens the context can take.
    Returns the selection and the visual token sequence [n_tokens, dim] in time order.
    """
    if budget < 1:
        raise HandheldError(
            f"no context left for video tokens (budget {budget})", "shorten the question or raise context_len"
        )
    frames = temporal_dedup(dino_feats, cfg.dedup_window, cfg.dedup_threshold, cfg.dedup_rule)
    hi, lo = visual_tokens(frames)
    if hi.shape[1] != cfg.hi_tokens or lo.shape[1] != cfg.lo_tokens:
        raise HandheldError(
            f"projector gave {hi.shape[1]}/{lo.shape[1]} tokens per frame, config says {cfg.hi_tokens}/{cfg.lo_tokens}",
            "re-export with matching grids",
        )
    k = full_res_count(len(frames), budget, cfg.hi_tokens, cfg.lo_tokens)
    chosen = top_k_frames(query_scores(hi, text_embeds), k)
    is_full = [i in chosen for i in range(len(frames))]
    after_stc = spatial_compress(hi, lo, is_full, cfg.stc_chunk, cfg.stc_threshold)
    final = truncate_uniform(after_stc, budget)
    counts = {
        "frames_sampled": dino_feats.shape[0],
        "frames_after_dedup": len(frames),
        "tokens_sampled": dino_feats.shape[0] * cfg.hi_tokens,
        "tokens_after_dedup": len(frames) * cfg.hi_tokens,
        "tokens_after_query": k * cfg.hi_tokens + (len(frames) - k) * cfg.lo_tokens,
        "tokens_after_stc": sum(int(t.numel()) for t in after_stc),
        "tokens_after_truncation": sum(int(t.numel()) for t in final),
        "budget": budget,
    }
    selection = Selection(dino_feats.shape[0], frames, [frames[i] for i in chosen], [t.tolist() for t in final], counts)
    seq = [(hi[i] if is_full[i] else lo[i])[final[i]] for i in range(len(frames))]
    return selection, torch.cat(seq, dim=0)
