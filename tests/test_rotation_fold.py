import copy

import pytest
import torch
from rotation_helpers import TINY, tiny_llama, tokens

from export.rotation import apply_rotation, quarot_rotations
from export.rotation.adapter import slots_for
from export.rotation.online import OnlineHadamard
from export.rotation.rotation_file import load_rotation_file, save_rotation_file
from runtime.errors import HandheldError


def _orthogonal(n, seed):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("quantized_kv", [False, True])
def test_quarot_keeps_the_function(quantized_kv):
    m = tiny_llama()
    x = tokens()
    ref = m(x)
    r = apply_rotation(copy.deepcopy(m), "quarot", None, quantized_kv=quantized_kv)
    torch.testing.assert_close(r(x), ref, atol=1e-4, rtol=1e-4)
    assert r.lm_head.weight is not r.embed_tokens.weight  # untied
    assert all(torch.equal(l.input_layernorm.weight, torch.ones(TINY.dim)) for l in r.layers)
    assert all(isinstance(l.mlp.down_rotate, OnlineHadamard) for l in r.layers)
    assert all(isinstance(l.self_attn.qk_rotate, OnlineHadamard) == quantized_kv for l in r.layers)
    assert not torch.allclose(r.layers[0].self_attn.q_proj.weight, m.layers[0].self_attn.q_proj.weight)


def test_none_is_untouched():
    m = tiny_llama()
    assert apply_rotation(m, "none", None, quantized_kv=True) is m
    assert m.lm_head.weight is m.embed_tokens.weight


def test_hadamard_rotation_reduces_4bit_activation_error():
    """The point of rotating: an outlier channel stops dominating the per-token 4-bit grid."""
    from export.quant.fake import fake_quant_tokens

    x = torch.randn(64, TINY.dim, generator=torch.Generator().manual_seed(0))
    x[:, 5] *= 50  # one outlier channel, as in real LLM activations
    r1, _ = quarot_rotations(slots_for(tiny_llama()))
    r = r1.float()
    plain = (fake_quant_tokens(x, 4) - x).pow(2).mean()
    rotated = (fake_quant_tokens(x @ r, 4) @ r.T - x).pow(2).mean()
    assert rotated < 0.3 * plain, (float(rotated), float(plain))


def test_spinquant_file_round_trip_keeps_the_function(tmp_path):
    m, x = tiny_llama(), tokens()
    r1, r2 = _orthogonal(TINY.dim, 0), [_orthogonal(TINY.head_dim, i + 1) for i in range(TINY.n_layers)]
    path = save_rotation_file(tmp_path / "rot.pt", r1, r2, m, {"recipe": "test"}, {})
    got1, got2, blob = load_rotation_file(path, m)
    assert torch.allclose(got1, r1, atol=1e-6) and blob["recipe"] == {"recipe": "test"}
    out = apply_rotation(copy.deepcopy(m), "spinquant", str(path), quantized_kv=True)(x)
    torch.testing.assert_close(out, m(x), atol=1e-4, rtol=1e-4)


def test_mismatched_rotation_files_are_refused(tmp_path):
    m = tiny_llama()
    r1, r2 = _orthogonal(TINY.dim, 0), [_orthogonal(TINY.head_dim, 1)] * TINY.n_layers
    good = save_rotation_file(tmp_path / "good.pt", r1, r2, m, {}, {})
    with pytest.raises(HandheldError, match="different checkpoint"):
        load_rotation_file(good, tiny_llama(seed=7))  # same shapes, other weights
    from dataclasses import replace

    from export.llm.model import Llama

    other = Llama(replace(TINY, n_layers=2))
    with pytest.raises(HandheldError, match="another architecture.*n_layers"):
        apply_rotation(other, "spinquant", str(good), quantized_kv=False)
    bad = save_rotation_file(tmp_path / "bad.pt", r1 * 1.1, r2, m, {}, {})
    with pytest.raises(HandheldError, match="non-orthogonal R1"):
        load_rotation_file(bad, m)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(HandheldError, match="cannot be read"):
        load_rotation_file(tmp_path / "junk.pt", m)
    with pytest.raises(HandheldError, match="does not exist"):
        load_rotation_file(tmp_path / "missing.pt", m)


def test_unknown_architecture_is_refused():
    class NotALlama(torch.nn.Module):
        pass

    with pytest.raises(HandheldError, match="(?s)unknown architecture for rotation 'NotALlama'.*Llama"):
        apply_rotation(NotALlama(), "quarot", None, quantized_kv=False)


def test_quarot_rotations_are_deterministic():
    a1, a2 = quarot_rotations(slots_for(tiny_llama()))
    b1, b2 = quarot_rotations(slots_for(tiny_llama()))
    assert torch.equal(a1, b1) and all(torch.equal(x, y) for x, y in zip(a2, b2))
