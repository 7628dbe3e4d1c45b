"""Generated Hadamard matrices (never tabulated): Sylvester for powers of two, Paley I/II for
the small non-power-of-two factor, and their Kronecker product for sizes like 1536 = 12 x 128.

A size n is written n = m * 2**k with the smallest m that has a construction:
    m = 1                          Sylvester only
    m = q + 1,    q prime, q = 3 mod 4   Paley I   (12 = 11+1, 20, 24, 32, 44, 48, 60, 72, ...)
    m = 2(q + 1), q prime, q = 1 mod 4   Paley II  (28 = 2*14, 36 = 2*18, 76 = 2*38, ...)
Examples: SmolLM2 hidden 576 = 36 x 16, FFN 1536 = 12 x 128; Llama 3.2 1B 8192 = 2**13;
Qwen2.5-0.5B hidden 896 = 28 x 32 and FFN 4864 = 76 x 64 (Paley II on q = 37, so it *does*
have a Hadamard, though SpinQuant's tables lack order 76). Sizes with no construction here
(Williamson-type orders such as 172 for Llama-2 7B's 11008 = 43 x 256) get the fallback in
`plan_hadamard`: a block-diagonal Hadamard I_m (x) H_{2**k}, still orthogonal and exact in
full precision, but it only spreads outliers within blocks of 2**k channels.

All matrices here are +-1 valued (unnormalised); divide by sqrt(n) to make them orthonormal.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from runtime.errors import HandheldError

# A block-diagonal fallback needs at least this many channels per block to be worth running.
MIN_FALLBACK_BLOCK = 32
# Online transforms apply the m factor as a dense [m, m] matmul: beyond this it costs more than
# the linear it protects (11008 = 5504 x 2 has a Paley factor, but a 5504-wide one).
MAX_ONLINE_FACTOR = 128


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, math.isqrt(q) + 1))


def _power_of_two_part(n: int) -> int:
    return n & -n


def sylvester(n: int) -> torch.Tensor:
    """[n, n] Sylvester Hadamard (n a power of two), float64, symmetric."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Sylvester Hadamard needs a power of two, got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    base = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.kron(base, h)
    return h


def _jacobsthal(q: int) -> torch.Tensor:
    """[q, q] Q[i, j] = legendre(j - i mod q) for prime q."""
    squares = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0.0] + [1.0 if r in squares else -1.0 for r in range(1, q)], dtype=torch.float64)
    idx = (torch.arange(q)[None, :] - torch.arange(q)[:, None]) % q
    return chi[idx]


def _conference(q: int) -> torch.Tensor:
    """[q+1, q+1] Paley conference matrix: zero diagonal, C C^T = q I."""
    c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    c[0, 1:] = 1.0
    c[1:, 0] = 1.0 if q % 4 == 1 else -1.0
    c[1:, 1:] = _jacobsthal(q)
    return c


def paley(m: int) -> torch.Tensor | None:
    """[m, m] Hadamard by Paley's constructions, or None when neither applies to m."""
    if _is_prime(m - 1) and (m - 1) % 4 == 3:  # Paley I: C antisymmetric, H = I + C
        return torch.eye(m, dtype=torch.float64) + _conference(m - 1)
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:  # Paley II: C symmetric
        c = _conference(m // 2 - 1)
        a = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        b = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        return torch.kron(c, a) + torch.kron(torch.eye(m // 2, dtype=torch.float64), b)
    return None


@functools.cache
def small_factor(m: int) -> torch.Tensor | None:
    """The [m, m] +-1 Hadamard for the non-power-of-two factor (checked), or None."""
    if m == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    h = paley(m)
    if h is not None:
        assert torch.equal(h @ h.T, m * torch.eye(m, dtype=torch.float64)), f"Paley construction of {m} is wrong"
    return h


@dataclass(frozen=True)
class HadamardPlan:
    """How to build an n x n orthonormal Hadamard-like matrix: (m x m factor) (x) (p x p Sylvester).

    `full` is False for the block-diagonal fallback, where the m factor is the identity."""

    n: int
    m: int
    p: int
    full: bool

    def factor(self) -> torch.Tensor:
        """[m, m] float64, +-1 (or the identity for the fallback)."""
        return small_factor(self.m) if self.full else torch.eye(self.m, dtype=torch.float64)

    def matrix(self) -> torch.Tensor:
        """[n, n] float64, orthonormal: (A (x) H_p) / sqrt(norm)."""
        scale = math.sqrt(self.n if self.full else self.p)
        return torch.kron(self.factor(), sylvester(self.p)) / scale


def plan_hadamard(
    n: int, what: str = "size", allow_fallback: bool = True, max_factor: int | None = None
) -> HadamardPlan:
    """Pick the construction for size n (smallest non-power-of-two factor first, at most
    `max_factor` wide), else the block-diagonal fallback when allowed."""
    if n < 1:
        raise HandheldError(f"{what} {n} has no Hadamard", "check the model config")
    p = _power_of_two_part(n)
    while p >= 1:
        m = n // p
        if max_factor is not None and m > max_factor:
            break
        if small_factor(m) is not None:
            return HadamardPlan(n, m, p, full=True)
        p //= 2
    p = _power_of_two_part(n)
    if allow_fallback and p >= MIN_FALLBACK_BLOCK:
        return HadamardPlan(n, n // p, p, full=False)
    raise HandheldError(
        f"{what} {n} = {n // _power_of_two_part(n)} x {_power_of_two_part(n)} has no usable Hadamard "
        f"(no Paley factor, power-of-two part below {MIN_FALLBACK_BLOCK})",
        "export without online rotations (--rotation none), or use a model whose head_dim/FFN size is a "
        "multiple of 32 or of a Paley order (12, 20, 28, 36, ...)",
    )


def hadamard(n: int) -> torch.Tensor:
    """[n, n] orthonormal Hadamard (float64); raises if n has no full construction."""
    return plan_hadamard(n, allow_fallback=False).matrix()


def random_hadamard(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, n] orthonormal H diag(s) with random signs s (QuaRot's R1/R2), float64.

    Sizes with no Hadamard fall back to a random orthogonal matrix (QR of a Gaussian),
    which is fine for rotations folded offline."""
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64).double() * 2 - 1
    try:
        return hadamard(n) * signs[None, :]
    except HandheldError:
        q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
        return q * torch.sign(torch.diagonal(r))[None, :]
