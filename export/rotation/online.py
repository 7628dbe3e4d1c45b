"""Online Hadamard transforms (SpinQuant's R3 on q/k, R4 on the down_proj input) that stay in
the exported graph, built from standard ops only so that every backend lowers them.

An n = m * p transform (p a power of two) acts on x: [..., n] as x @ ((A (x) S_p) / sqrt(n)):
viewed as X: [..., m, p], that is A^T X S_p. Two ways to apply S_p:
- "matmul" (default): X @ S_p/sqrt(p), one GEMM with a generated constant; for decode on a
  phone CPU one op per layer beats log2(p) stages of small element-wise ops, whose dispatch
  overhead dominates at a few thousand channels per token.
- "butterfly": the fast Walsh-Hadamard transform as log2(p) reshape + add/sub stages
  (O(n log n) flops, exact +-1 arithmetic), for long prefills or accelerators.
- "fast": ExecuTorch's own kernel, `llama::fast_hadamard_transform` (X @ S_p / sqrt(p) in
  O(p log p) per row, one op): ExecuTorch programs only (ONNX and CoreML have no such op).
The m factor (12 for SmolLM2's FFN 1536) is a small [m, m] matmul; m = 1 skips it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from export.rotation.hadamard import MAX_ONLINE_FACTOR, HadamardPlan, plan_hadamard, sylvester

MODES = ("matmul", "butterfly", "fast")


def butterfly(x: torch.Tensor) -> torch.Tensor:
    """x: [..., p] -> x @ S_p (unnormalised Sylvester Hadamard), p a power of two."""
    p = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < p:
        y = x.reshape(*lead, p // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*lead, p)
        h *= 2
    return x


class OnlineHadamard(nn.Module):
    """y = x @ H along the last dim, H = plan.matrix() (orthonormal); float32 buffers."""

    def __init__(self, plan: HadamardPlan, mode: str = "matmul"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.plan = plan
        self.n, self.m, self.p, self.mode = plan.n, plan.m, plan.p, mode
        # fallback plans normalise by sqrt(p) (identity m factor), full ones by sqrt(n)
        norm = math.sqrt(plan.n if plan.full else plan.p)
        if mode == "matmul":
            self.register_buffer("s_p", (sylvester(plan.p) / math.sqrt(plan.p)).float())
            left_scale = math.sqrt(plan.p) / norm
        elif mode == "fast":
            import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers llama::)

            self.s_p = None
            left_scale = math.sqrt(plan.p) / norm  # the kernel normalises by sqrt(p) itself
        else:
            self.s_p = None
            left_scale = 1.0 / norm
        self.scale = None
        if self.m > 1 and plan.full:
            self.register_buffer("a_t", (plan.factor().T * left_scale).float())  # [m, m]
        else:
            self.a_t = None
            if left_scale != 1.0:
                self.scale = left_scale

    @classmethod
    def for_size(cls, n: int, what: str, mode: str = "matmul") -> OnlineHadamard:
        return cls(plan_hadamard(n, what, max_factor=MAX_ONLINE_FACTOR), mode)

    def matrix(self) -> torch.Tensor:
        """[n, n] float64: the matrix this module right-multiplies by (to fold its transpose)."""
        return self.plan.matrix()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., n]
        lead = x.shape[:-1]
        y = x.reshape(*lead, self.m, self.p)  # [..., m, p]
        if self.mode == "matmul":
            y = y @ self.s_p
        elif self.mode == "fast":
            y = torch.ops.llama.fast_hadamard_transform(y.contiguous())
        else:
            y = butterfly(y)
        if self.a_t is not None:
            y = torch.matmul(self.a_t, y)  # [m, m] @ [..., m, p]
        elif self.scale is not None:
            y = y * self.scale
        return y.reshape(*lead, self.n)

    def extra_repr(self) -> str:
        return f"n={self.n} ({self.m} x {self.p}), mode={self.mode}"


def with_mode(model: nn.Module, mode: str) -> int:
    """Switch every OnlineHadamard in `model` to `mode` in place (the same transform); how many."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()]
    n = 0
    for parent, name, child in swaps:
        if isinstance(child, OnlineHadamard) and child.mode != mode:
            setattr(parent, name, OnlineHadamard(child.plan, mode))
            n += 1
    return n
