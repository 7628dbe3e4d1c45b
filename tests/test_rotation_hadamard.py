import math

import pytest
import torch

from export.rotation.hadamard import MAX_ONLINE_FACTOR, hadamard, paley, plan_hadamard, random_hadamard
from export.rotation.online import OnlineHadamard
from runtime.errors import HandheldError


@pytest.mark.parametrize("m", [12, 20, 24, 28, 36, 44, 60, 76])
def test_paley_is_hadamard(m):
    h = paley(m)
    assert h is not None and set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h @ h.T, m * torch.eye(m, dtype=torch.float64))


@pytest.mark.parametrize(
    "n, m, p",
    [(64, 1, 64), (576, 36, 16), (1536, 12, 128), (896, 28, 32), (4864, 76, 64), (8192, 1, 8192), (80, 20, 4)],
)
def test_plans_of_real_sizes(n, m, p):
    plan = plan_hadamard(n, max_factor=MAX_ONLINE_FACTOR)
    assert (plan.m, plan.p, plan.full) == (m, p, True)
    if n > 1536:  # the [n, n] float64 product would cost minutes on 2 cores
        return
    h = plan.matrix()
    assert float((h @ h.T - torch.eye(n, dtype=torch.float64)).abs().max()) < 1e-12
    assert torch.allclose(h.abs(), torch.full_like(h, 1 / math.sqrt(n)))


def test_fallback_and_errors():
    plan = plan_hadamard(11008, max_factor=MAX_ONLINE_FACTOR)  # 43 x 256: no Paley 172
    assert (plan.m, plan.p, plan.full) == (43, 256, False)
    small = plan_hadamard(43 * 32, max_factor=MAX_ONLINE_FACTOR)  # same fallback, checkable size
    assert (small.m, small.p, small.full) == (43, 32, False)
    h = small.matrix()
    assert float((h @ h.T - torch.eye(43 * 32, dtype=torch.float64)).abs().max()) < 1e-12
    with pytest.raises(HandheldError, match="no usable Hadamard"):
        plan_hadamard(1002, "FFN size")  # 501 x 2
    with pytest.raises(HandheldError):
        hadamard(11008 // 256 * 8)  # no full construction, and hadamard() allows no fallback


def test_random_hadamard_is_orthogonal_and_seeded():
    a = random_hadamard(48, torch.Generator().manual_seed(3))
    b = random_hadamard(48, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert float((a @ a.T - torch.eye(48, dtype=torch.float64)).abs().max()) < 1e-12
    c = random_hadamard(50, torch.Generator().manual_seed(3))  # no Hadamard: random orthogonal
    assert float((c @ c.T - torch.eye(50, dtype=torch.float64)).abs().max()) < 1e-12


@pytest.mark.parametrize("n", [12, 64, 80, 1536, 11008 // 43 * 3])
@pytest.mark.parametrize("mode", ["matmul", "butterfly"])
def test_online_module_matches_matrix(n, mode):
    mod = OnlineHadamard.for_size(n, "test", mode)
    x = torch.randn(2, 3, 5, n)
    ref = (x.double() @ mod.matrix()).float()
    torch.testing.assert_close(mod(x), ref, atol=2e-5 * math.sqrt(n), rtol=1e-4)


def test_online_module_exports_with_standard_ops():
    mod = OnlineHadamard.for_size(1536, "FFN size").eval()
    x = torch.randn(1, 7, 1536)
    ep = torch.export.export(mod, (x,), dynamic_shapes=({1: torch.export.Dim("seq", min=1, max=256)},))
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert all(o.startswith("aten.") for o in ops), ops
    torch.testing.assert_close(ep.module()(x), mod(x))
