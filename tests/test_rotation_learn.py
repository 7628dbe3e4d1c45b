import copy
from dataclasses import replace

import pytest
import torch
from rotation_helpers import tiny_llama, tokens

import export.quant as quant
from export.quant.simulate import fake_quantize_model
from export.rotation import apply_rotation, quarot_rotations
from export.rotation import learn as learn_mod
from export.rotation.adapter import slots_for
from export.rotation.cayley import CayleySGD
from export.rotation.learn import RotationRecipe, build_learner, calibration_windows, learn_rotations
from export.rotation.rotation_file import load_rotation_file
from runtime.errors import HandheldError


@pytest.fixture
def schemes(monkeypatch):
    """Extra schemes to isolate each quantization point."""
    extra = {
        "A4": quant.QuantScheme("A4", a_bits=4),
        "KV4": quant.QuantScheme("KV4", kv_bits=4),
        "A4KV4": quant.QuantScheme("A4KV4", a_bits=4, kv_bits=4),
        "W4A4KV4-noclip": replace(quant.SCHEMES["W4A4KV4"], name="W4A4KV4-noclip", w_clip_search=False),
    }
    monkeypatch.setattr(quant, "SCHEMES", {**quant.SCHEMES, **extra})
    monkeypatch.setattr(learn_mod, "SCHEMES", quant.SCHEMES)
    return quant.SCHEMES


@pytest.mark.parametrize(
    "scheme, weights_in_loss",
    [
        ("A4", False),
        ("KV4", False),
        ("A4KV4", False),
        ("A4KV4", True),
        ("W4A4KV4-noclip", True),
        ("W4A4KV4", True),
        ("W4A16g32", True),
    ],
)
def test_learner_computes_the_folded_quantized_model(schemes, scheme, weights_in_loss):
    """Before any step, the learner is exactly QuaRot + fake quantization, with the same weight
    quantizer (clipping search included) as the evaluation: a learner blind to the clipping
    search learns rotations that the clipped RTN of `handheld eval llm` then punishes."""
    m, x = tiny_llama(), tokens()
    r1, r2 = quarot_rotations(slots_for(m))
    learner, rot = build_learner(m, r1, r2, scheme, weights_in_loss)
    s = schemes[scheme]
    folded = fake_quantize_model(apply_rotation(copy.deepcopy(m), "quarot", None, quantized_kv=s.quantized_kv), s)
    with torch.no_grad():
        rot.refresh()
        a, b = learner(x), folded(x)
        if s.w_bits < 16 and s.w_clip_search:
            # float32 (learner) vs float64 (fold) rotated weights break a few near-ties of the
            # per-row clipping search; a learner blind to the clipping differs everywhere
            close = (a - b).abs() <= 1e-4 + 1e-4 * b.abs()
            assert float(close.float().mean()) > 0.95
        else:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        assert float((folded(x) - m(x)).abs().max()) > 1e-2  # the quantization is really on


def test_cayley_sgd_stays_orthogonal_and_descends():
    torch.manual_seed(0)
    target, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
    if torch.linalg.det(target) < 0:  # reachable from the identity: stay in SO(n)
        target[:, 0] *= -1
    x = torch.nn.Parameter(torch.eye(20, dtype=torch.float64))
    opt = CayleySGD([x], lr=0.5, momentum=0.9)
    losses = []
    for _ in range(60):
        loss = (x - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.05 * losses[0]
    assert float((x @ x.T - torch.eye(20, dtype=torch.float64)).abs().max()) < 1e-12


def _learn(tmp_path, name, steps=4, **kw):
    recipe = RotationRecipe(scheme="W4A4KV4", steps=steps, batch=2, seq_len=16, lr=1.0, checkpoint_every=2, **kw)
    windows = tokens(8, 16, seed=5)
    return learn_rotations(tiny_llama(), windows, recipe, tmp_path / name, progress=False)


def test_learning_lowers_the_loss_and_is_deterministic(tmp_path):
    a = torch.load(_learn(tmp_path, "a.pt", steps=6), weights_only=True)
    b = torch.load(_learn(tmp_path, "b.pt", steps=6), weights_only=True)
    assert torch.equal(a["r1"], b["r1"]) and torch.equal(a["r2"], b["r2"])
    losses = a["history"]["loss"]
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2])
    r1, r2, _ = load_rotation_file(tmp_path / "a.pt", tiny_llama())  # orthogonal, matches the model
    q1, _ = quarot_rotations(slots_for(tiny_llama()))
    assert not torch.allclose(r1, q1, atol=1e-3)  # it moved away from the QuaRot init


def test_learning_resumes_after_an_interruption(tmp_path, monkeypatch):
    full = torch.load(_learn(tmp_path, "full.pt"), weights_only=True)
    calls = {"n": 0}
    real = learn_mod.lm_loss

    def crash_on_third(model, x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(model, x)

    monkeypatch.setattr(learn_mod, "lm_loss", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _learn(tmp_path, "resumed.pt")
    assert (tmp_path / "resumed.ckpt").is_file()  # written after step 2
    monkeypatch.setattr(learn_mod, "lm_loss", real)
    resumed = torch.load(_learn(tmp_path, "resumed.pt"), weights_only=True)
    torch.testing.assert_close(resumed["r1"], full["r1"])
    assert resumed["history"]["loss"] == pytest.approx(full["history"]["loss"])
    assert not (tmp_path / "resumed.ckpt").exists()


class CharTokenizer:
    """Stand-in tokenizer: one id per character (calibration length checks only)."""

    def __call__(self, text, return_tensors=None, add_special_tokens=False):
        class Out:
            input_ids = torch.tensor([[ord(c) % 100 for c in text[:5000]]])

        return Out()


def test_calibration_text_too_short(monkeypatch):
    monkeypatch.setattr("export.data.text.split_text", lambda split: "short calibration text " * 10)
    with pytest.raises(HandheldError, match="too short"):
        calibration_windows(CharTokenizer(), seq_len=512, wanted=4)
    w = calibration_windows(CharTokenizer(), seq_len=16, wanted=100)
    assert w.shape == (len("short calibration text " * 10) // 16, 16)


def test_bad_recipes():
    with pytest.raises(HandheldError, match="unknown quantization scheme"):
        RotationRecipe(scheme="W3A3")
    with pytest.raises(HandheldError, match="steps"):
        RotationRecipe(steps=0)
