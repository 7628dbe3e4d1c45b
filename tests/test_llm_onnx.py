"""ONNX backend mechanics on tiny random decoders with odd sizes (fast): the KV-buffer
wrapper, the exported graph (MatMulNBits where intended, Hadamards left alone), the eager
MatMulNBits simulation against onnxruntime's own quantized weights and outputs, the runner
contract. Real-SmolLM2 parity lives in test_llm_onnx_smollm2.py."""

import numpy as np
import pytest
import torch

from export.config import LLMQuantConfig
from runtime.errors import HandheldError
from tests.llm_helpers import export_tiny, random_calibration, tiny_decoder

FFN = 176  # not a multiple of the 32 block: exercises MatMulNBits' K padding


def _tiny(**overrides):
    return tiny_decoder(**{"ffn_dim": FFN, **overrides})


def _export(model, tmp_path, quant=LLMQuantConfig(), max_seq_len=40):
    """Through the real pipeline (prepare -> LLM_RECIPES['onnx'] -> manifest), tokenizer stubbed;
    GPTQ (the default) calibrated on random tokens."""
    from export.llm.quant_onnx import simulate_matmulnbits

    calibration = random_calibration(model) if quant.weight_method == "gptq" else None
    return export_tiny(
        model, tmp_path / "onnx", "onnx", simulate_matmulnbits, quant, max_seq_len, calibration=calibration
    )


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return _export(_tiny(), tmp_path_factory.mktemp("tiny_onnx"))


def _chunks(runner_or_step, tokens, splits):
    """Feed tokens in chunks at increasing positions; logits after each chunk."""
    out, pos = [], 0
    for n in splits:
        out.append(runner_or_step(tokens[pos : pos + n], pos))
        pos += n
    return out


def test_kv_buffer_wrapper_matches_full_sequence_eager():
    from export.llm.wrapper_onnx import PastKVDecoder

    model = _tiny()
    dec = PastKVDecoder(model, 32).eval()
    tokens = torch.randint(0, model.args.vocab_size, (1, 11))
    with torch.no_grad():
        ref = model(tokens)[0]
        cache = dec.empty_cache()
        pos = 0
        for n in (5, 1, 3, 2):
            logits, *cache = dec(tokens[:, pos : pos + n], torch.tensor([pos]), *cache)
            pos += n
            torch.testing.assert_close(logits[0], ref[pos - 1], atol=1e-4, rtol=1e-4)
        assert cache[0].shape == (1, model.args.n_kv_heads, 32, model.args.head_dim)
        assert not cache[0][:, :, 11:].any()  # only the fed positions are written
        # a rewind overwrites from its position; what lies beyond is never read
        logits, *_ = dec(tokens[:, 3:5], torch.tensor([3]), *cache)
        torch.testing.assert_close(logits[0], ref[4], atol=1e-4, rtol=1e-4)


def test_float_graph_matches_eager_with_dynamic_lengths(tmp_path):
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    model = _tiny()
    folder, manifest, _ = _export(
        model, tmp_path, LLMQuantConfig(weight_bits=16, dynamic_activations=False, embedding_bits=0, output_bits=0)
    )
    assert manifest["onnx_graph"]["matmulnbits_by_bits"] == {}
    step = LLMStepper(open_runner(folder, threads=1))
    tokens = torch.randint(0, model.args.vocab_size, (13,))
    with torch.no_grad():
        ref = model(tokens[None])[0]
    got = _chunks(step, tokens, (6, 1, 1, 4, 1))
    for logits, end in zip(got, (6, 7, 8, 12, 13)):
        torch.testing.assert_close(logits, ref[end - 1], atol=2e-4, rtol=1e-4)


def test_every_linear_is_matmulnbits_4bit_lm_head_included_by_default(tiny_onnx):
    _, manifest, _ = tiny_onnx
    g = manifest["onnx_graph"]
    n_gemms = 2 * 4  # per layer: q|k|v fused, o, gate|up fused, down
    assert g["matmulnbits_by_bits"] == {"4": n_gemms + 1}  # + lm_head (the ONNX default, GPTQ'd)
    assert manifest["config"]["quant"]["output_bits"] == 4 and manifest["quantization"]["output_bits"] == 4
    assert g["block_integers_rewritten"] == n_gemms + 1  # GPTQ's integers, lm_head's too
    # onnxruntime's fused decoder layout: residual add + RMSNorm as one node, RoPE inside attention
    assert g["op_counts"]["SkipSimplifiedLayerNormalization"] == 2 * 2
    assert "Neg" not in g["op_counts"] and "Concat" not in g["op_counts"]  # no rotate_half left
    assert g["float_constant_matmuls"] == 0  # no float weight left behind (no Hadamards in this model)
    assert "Gemm" not in g["op_counts"]
    assert (
        g["op_counts"]["GroupQueryAttention"] == 2 and "Softmax" not in g["op_counts"]
    )  # one fused attention per layer
    assert g["op_counts"]["Gather"] >= 1 and g["op_counts"].get("GatherBlockQuantized", 0) == 0


def _initializer_weights(path):
    """MatMulNBits node -> dequantized weight [N, K] read back from the .onnx file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        n, k, bits, block = attrs["N"], attrs["K"], attrs["bits"], attrs["block_size"]
        packed, scales = inits[node.input[1]].reshape(n, -1), inits[node.input[2]].reshape(n, -1)
        if bits == 4:
            q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1).astype(np.int32) - 8
        else:
            q = packed.astype(np.int32) - 128
        w = (q.reshape(n, -1, block) * scales[:, :, None]).reshape(n, -1)[:, :k].astype(np.float32)
        weights[node.name] = (bits, w)
    return weights


def test_gptq_integers_are_written_on_the_quantizers_scales(tiny_onnx, tmp_path):
    """The default (GPTQ) export stores GPTQ's integers in every block MatMulNBits; an RTN
    export rewrites nothing, so the simulation and onnxruntime's quantizer agree bit for bit."""
    _, manifest, prepared = tiny_onnx
    assert prepared.quant_report["weight_method"] == "gptq"
    assert manifest["onnx_graph"]["block_integers_rewritten"] == 2 * 4 + 1  # and the 4-bit lm_head
    _, rtn, _ = _export(_tiny(), tmp_path, quant=LLMQuantConfig(weight_method="rtn"))
    assert rtn["onnx_graph"]["block_integers_rewritten"] == 0


def test_simulated_weights_equal_the_quantizers_exactly(tiny_onnx):
    folder, _, prepared = tiny_onnx
    onnx_weights = [w for _, w in _initializer_weights(folder / "model.onnx").values()]
    sim = {n: m.weight.numpy() for n, m in prepared.model.named_modules() if type(m).__name__ == "MatMulNBitsLinear"}
    # the graph fuses q|k|v and gate|up (same input; blocks run along it, so columns quantize alone)
    expected = []
    for i in range(2):
        p = f"layers.{i}."
        expected += [
            np.concatenate([sim[p + f"self_attn.{n}_proj"] for n in "qkv"]),
            sim[p + "self_attn.o_proj"],
            np.concatenate([sim[p + "mlp.gate_proj"], sim[p + "mlp.up_proj"]]),
            sim[p + "mlp.down_proj"],
        ]
    expected.append(sim["lm_head"])
    assert len(onnx_weights) == len(expected) == 9
    for w in expected:
        assert any(o.shape == w.shape and np.allclose(o, w, rtol=0, atol=1e-6 * np.abs(w).max()) for o in onnx_weights)


def test_artifact_matches_matmulnbits_simulation_through_prefill_and_decode(tiny_onnx):
    from export.llm.parity import EagerLLMRunner
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    folder, manifest, prepared = tiny_onnx
    art = LLMStepper(open_runner(folder, threads=1))
    ref = LLMStepper(EagerLLMRunner(prepared.wrapper, manifest["max_seq_len"]))
    tokens = torch.randint(0, 133, (17,), generator=torch.Generator().manual_seed(1))
    for a, r in zip(_chunks(art, tokens, (9, 1, 1, 1, 5)), _chunks(ref, tokens, (9, 1, 1, 1, 5))):
        assert torch.nn.functional.cosine_similarity(a.double(), r.double(), dim=0) > 0.9999
        assert int(a.argmax()) == int(r.argmax())


def test_runner_rewinds_like_the_static_cache_and_refuses_gaps(tiny_onnx):
    from runtime.runner import open_runner

    folder, _, _ = tiny_onnx
    runner = open_runner(folder, threads=1)
    t = torch.tensor([[5, 6, 7, 8]])
    first = runner.run({"tokens": t, "input_pos": torch.tensor([0])})["logits"]
    runner.run({"tokens": torch.tensor([[9]]), "input_pos": torch.tensor([4])})
    again = runner.run({"tokens": t, "input_pos": torch.tensor([0])})["logits"]  # a new conversation
    torch.testing.assert_close(first, again)
    assert first.shape == (1, 133)
    with pytest.raises(HandheldError, match="skips past"):
        runner.run({"tokens": torch.tensor([[1]]), "input_pos": torch.tensor([9])})


def test_hadamards_stay_float_matmuls_and_the_graph_matches(tmp_path):
    from export.rotation import apply_rotation

    model = apply_rotation(_tiny(ffn_dim=192), "quarot", quantized_kv=True)  # 192 = 12 x 16 -> a 12-factor Hadamard
    folder, manifest, prepared = _export(model, tmp_path)
    g = manifest["onnx_graph"]
    assert g["matmulnbits_by_bits"] == {"4": 8 + 1}  # lm_head too
    assert (
        g["roles"]["other"] == 2 * 2
    )  # R4's Hadamard factors, none quantized (R3 is exact identity on an fp32 cache: dropped)
    from export.llm.parity import EagerLLMRunner
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    tokens = torch.randint(0, 133, (12,), generator=torch.Generator().manual_seed(2))
    a = _chunks(LLMStepper(open_runner(folder, threads=1)), tokens, (8, 1, 3))
    r = _chunks(LLMStepper(EagerLLMRunner(prepared.wrapper, 40)), tokens, (8, 1, 3))
    for x, y in zip(a, r):
        assert torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=0) > 0.9999
    # the bench's timing-only copy without R4: exactly its 2 x (Reshape, MatMul, MatMul, Reshape) go
    import onnx

    from export.llm.bench_onnx import without_online_hadamards

    stripped = without_online_hadamards(folder, tmp_path / "no-r4")
    ops = lambda d: [n.op_type for n in onnx.load(str(d / "model.onnx")).graph.node]
    before, after = ops(folder), ops(stripped)
    assert len(before) - len(after) == 2 * 4 and after.count("MatMul") == before.count("MatMul") - 2 * 2
    b = _chunks(LLMStepper(open_runner(stripped, threads=1)), tokens, (8, 1, 3))  # it runs; its logits are wrong
    assert b[-1].shape == a[-1].shape and not torch.allclose(b[-1], a[-1], atol=1e-3)
    assert without_online_hadamards(_export(_tiny(), tmp_path / "plain")[0], tmp_path / "none") is None


def test_unsupported_quantization_is_refused(tmp_path):
    with pytest.raises(HandheldError, match="MatMulNBits with block 32"):
        _export(_tiny(), tmp_path, LLMQuantConfig(group_size=64))


def test_backend_all_exports_every_backend_and_reports_a_failure(monkeypatch, tmp_path, capsys):
    """`handheld export llm --backend all`: one config, a folder per backend; a failing backend is
    printed and makes the command fail, the others still export (stubs: mechanics only)."""
    import export.llm.pipeline as pipeline
    from export.cli import main

    seen = []

    def fake_export(cfg, prepared, out, check_parity=True):
        seen.append((cfg.backend.value, out.name, cfg.rotation.value, cfg.max_seq_len))
        if cfg.backend.value == "coreml":
            raise HandheldError("CoreML conversion failed: stub", "fix it")
        return {"model_file": f"model.{cfg.backend.value}", "parity": {"passed": True}}

    monkeypatch.setattr(pipeline, "load_checkpoint", lambda path: "checkpoint")
    monkeypatch.setattr(pipeline, "prepare_model", lambda cfg, ck: ("prepared", cfg.backend.value))
    monkeypatch.setattr(pipeline, "export_prepared", fake_export)
    rc = main(["export", "llm", "--backend", "all", "--out", str(tmp_path / "all"), "--max-seq-len", "256"])
    assert rc == 1
    assert [s[:2] for s in seen] == [("executorch", "executorch"), ("onnx", "onnx"), ("coreml", "coreml")]
    assert len({s[2:] for s in seen}) == 1  # one rotation/quantization config for all
    out = capsys.readouterr().out
    assert "backend coreml: FAILED" in out and "onnx" in out


def test_8bit_lm_head_option(tmp_path):
    from export.llm.parity import EagerLLMRunner
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    folder, manifest, prepared = _export(_tiny(), tmp_path, LLMQuantConfig(output_bits=8))
    assert manifest["onnx_graph"]["matmulnbits_by_bits"] == {"4": 8, "8": 1}
    tokens = torch.randint(0, 133, (9,), generator=torch.Generator().manual_seed(3))
    a = _chunks(LLMStepper(open_runner(folder, threads=1)), tokens, (8, 1))
    r = _chunks(LLMStepper(EagerLLMRunner(prepared.wrapper, 40)), tokens, (8, 1))
    for x, y in zip(a, r):
        assert torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=0) > 0.9999
