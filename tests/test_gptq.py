import copy

import pytest
import torch
from rotation_helpers import tiny_llama, tokens

from export.quant import QuantScheme
from export.quant.fake import fake_quant_weight
from export.quant.gptq import gptq_quantize, gptq_quantizer, gptq_weights
from export.quant.simulate import fake_quantize_model
from export.rotation import apply_rotation
from runtime.errors import HandheldError


def _correlated(n=2048, k=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) @ torch.randn(k, k, generator=g)


@pytest.mark.parametrize("group, act_order", [(None, True), (32, True), (32, False)])
def test_gptq_beats_rtn_on_the_output_and_stays_on_the_grid(group, act_order):
    x = _correlated()
    w = torch.randn(40, 96, generator=torch.Generator().manual_seed(2))
    q = gptq_quantize(w, x.T @ x, bits=4, group=group, clip_search=False, act_order=act_order)
    rtn = fake_quant_weight(w, 4, group)
    err_gptq = float(((x @ (q - w).T) ** 2).mean())
    err_rtn = float(((x @ (rtn - w).T) ** 2).mean())
    assert err_gptq < 0.75 * err_rtn
    # static groups: every value is an integer multiple of its group's RTN scale, in [-8, 7]
    rows_w = w if group is None else w.reshape(-1, group)
    scale = rows_w.abs().amax(-1, keepdim=True) / 7
    k = (q if group is None else q.reshape(-1, group)) / scale
    torch.testing.assert_close(k, k.round(), atol=1e-4, rtol=0)
    assert float(k.min()) >= -8 - 1e-4 and float(k.max()) <= 7 + 1e-4


def test_gptq_with_unseen_inputs_and_bad_groups():
    x = _correlated(k=64)
    x[:, 3] = 0  # a dead input channel: zero Hessian row
    w = torch.randn(8, 64)
    q = gptq_quantize(w, x.T @ x, bits=4)
    assert torch.isfinite(q).all()
    with pytest.raises(HandheldError, match="multiple of group"):
        gptq_quantize(torch.randn(8, 40), torch.eye(40), bits=4, group=32)


def test_gptq_weights_lower_the_quantized_models_error():
    """On a tiny rotated Llama, GPTQ weights give logits closer to the float model's than RTN."""
    m = apply_rotation(tiny_llama(), "quarot", quantized_kv=False)
    calib, x = tokens(n=8, s=33, seed=3), tokens(n=4, s=33, seed=4)
    scheme = QuantScheme("W4g8", w_bits=4, w_group=8)  # 8 divides 48, 72 and 80
    before = {n: lin.weight.clone() for n, lin in m.linears().items()}
    weights = gptq_weights(m, calib, scheme, batch=3, progress=False)
    assert set(weights) == set(before)
    assert all(torch.equal(lin.weight, before[n]) for n, lin in m.linears().items())  # model untouched
    with torch.no_grad():
        ref = m(x)
        err_rtn = float((fake_quantize_model(copy.deepcopy(m), scheme)(x) - ref).pow(2).mean())
        err_gptq = float(
            (fake_quantize_model(copy.deepcopy(m), scheme, gptq_quantizer(weights))(x) - ref).pow(2).mean()
        )
    assert err_gptq < err_rtn
