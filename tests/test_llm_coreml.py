"""CoreML backend mechanics on a tiny random decoder (fast): the stateful wrapper, the converted
iOS 18 program (states, int4 per-block weights, Hadamards left fp16), the package's weights
against the eager simulation, and the saved program evaluated op by op with coremltools' value
inference (Linux) against eager. Real prediction needs macOS and is tested there only."""

import platform

import numpy as np
import pytest
import torch

from export.config import LLMQuantConfig
from runtime.errors import HandheldError
from tests.llm_helpers import export_tiny, random_calibration
from tests.llm_helpers import tiny_decoder as _tiny


def _export(model, tmp_path, quant=LLMQuantConfig(), max_seq_len=40):
    """Through the real pipeline; GPTQ (the default) calibrated on random tokens."""
    from export.llm.quant_coreml import simulate_coreml_weights

    calibration = random_calibration(model) if quant.weight_method == "gptq" else None
    return export_tiny(
        model, tmp_path / "coreml", "coreml", simulate_coreml_weights, quant, max_seq_len, calibration=calibration
    )


@pytest.fixture(scope="module")
def tiny_coreml(tmp_path_factory):
    return _export(_tiny(), tmp_path_factory.mktemp("tiny_coreml"))


def _chunks(step, tokens, splits):
    out, pos = [], 0
    for n in splits:
        out.append(step(tokens[pos : pos + n], pos))
        pos += n
    return out


def test_stateful_wrapper_matches_full_sequence_eager():
    from export.llm.wrapper_coreml import StatefulDecoder
    from runtime.coreml_runner import causal_mask

    model = _tiny()
    dec = StatefulDecoder(model, 32).eval()
    tokens = torch.randint(0, model.args.vocab_size, (1, 11))
    with torch.no_grad():
        ref = model(tokens)[0]
        pos = 0
        for n in (5, 1, 3, 2):
            logits = dec(tokens[:, pos : pos + n].int(), causal_mask(pos, n))
            pos += n
            torch.testing.assert_close(logits[0], ref[pos - 1], atol=1e-4, rtol=1e-4)


def test_program_is_stateful_ios18_with_int4_block_weights(tiny_coreml):
    _, manifest, _ = tiny_coreml
    c = manifest["coreml"]
    assert c["deployment_target"] == "iOS18"
    assert sorted(c["states"]) == ["key_cache", "value_cache"]
    assert c["op_counts"]["read_state"] == 2 and c["op_counts"]["coreml_update_state"] == 2
    assert (
        c["quantized_consts"]["linear"] == 14
        and c["quantized_consts"]["lm_head"] == 1
        and c["quantized_consts"]["embedding"] == 1
    )
    # the tiny model ties its embedding: coremltools deduplicates the identical int8 table and lm_head
    assert c["op_counts"]["constexpr_blockwise_shift_scale"] == c["quantized_consts"]["requested"] == 15


def test_package_weights_equal_the_simulation(tiny_coreml):
    from runtime.mil_interpreter import MILInterpreter

    folder, _, prepared = tiny_coreml
    interp = MILInterpreter(folder / "model.mlpackage")
    package = {}
    for op in interp.fn.operations:
        if op.op_type.startswith("constexpr_"):
            w = interp.consts[op.outputs[0].name]
            package.setdefault(w.shape, []).append(w)
    sim = [m.weight.numpy() for m in prepared.model.modules() if type(m).__name__ == "CoreMLWeightLinear"]
    sim.append(prepared.model.embed_tokens.weight.numpy())
    assert sum(len(v) for v in package.values()) == 15 and len(sim) == 16  # tied table + lm_head: one constant
    for w in sim:
        # every simulated weight is in the package, bit for bit
        assert any(np.array_equal(w, p) for p in package[w.shape]), (
            f"no package weight matches a simulated {w.shape} weight"
        )
    from coremltools.converters.mil.mil import types

    int4 = [
        op
        for op in interp.fn.operations
        if op.op_type == "constexpr_blockwise_shift_scale" and types.builtin_to_string(op.data.dtype) == "int4"
    ]
    assert len(int4) == 14


def test_gptq_integers_are_stored_as_they_are(tiny_coreml):
    """GPTQ's integers (on coremltools' own fp16 block scales) reach the package through the
    converter's compression metadata, not re-rounded; they differ from round-to-nearest."""
    from export.llm.quant_coreml import coreml_symmetric_scales
    from runtime.mil_interpreter import MILInterpreter

    folder, manifest, prepared = tiny_coreml
    assert (
        prepared.quant_report["weight_method"] == "gptq" and manifest["coreml"]["quantized_consts"]["linear_gptq"] == 14
    )
    stored = [
        op.data.val.astype(np.int8)
        for op in MILInterpreter(folder / "model.mlpackage").fn.operations
        if op.op_type == "constexpr_blockwise_shift_scale"
    ]
    moved = 0
    for name, lin in prepared.float_model.linears().items():
        q = dict(prepared.model.named_modules())[name].integers.numpy()
        assert any(x.shape == q.shape and np.array_equal(x, q) for x in stored), name
        scale = coreml_symmetric_scales(lin.weight, 4, 32)
        rtn = np.clip(
            np.round(lin.weight.numpy().astype(np.float16).reshape(*scale.shape[:2], -1) / scale), -7, 7
        ).reshape(q.shape)
        moved += int((rtn != q).sum())
    assert moved > 0


def test_mil_program_matches_eager_simulation_through_prefill_and_decode(tiny_coreml):
    from export.llm.parity import EagerLLMRunner
    from runtime.coreml_runner import CoreMLRunner
    from runtime.generate import LLMStepper
    from runtime.manifest import load_manifest

    folder, manifest, prepared = tiny_coreml
    art = LLMStepper(CoreMLRunner(folder, load_manifest(folder), interpreter=True))
    ref = LLMStepper(EagerLLMRunner(prepared.wrapper, manifest["max_seq_len"]))
    tokens = torch.randint(0, 133, (15,), generator=torch.Generator().manual_seed(1))
    for a, r in zip(_chunks(art, tokens, (7, 1, 1, 6)), _chunks(ref, tokens, (7, 1, 1, 6))):
        # fp16 constants (norm gains) are the only difference from the fp32 reference
        assert torch.nn.functional.cosine_similarity(a.double(), r.double(), dim=0) > 0.9999
        assert int(a.argmax()) == int(r.argmax())
    # a rewind to 0 starts a new conversation: stale cache rows are masked out
    again = _chunks(art, tokens, (7,))[0]
    first = _chunks(ref, tokens, (7,))[0]
    assert torch.nn.functional.cosine_similarity(again.double(), first.double(), dim=0) > 0.9999


def test_hadamards_stay_fp16_matmuls(tmp_path):
    from export.rotation import apply_rotation

    model = apply_rotation(_tiny(ffn_dim=192), "quarot", quantized_kv=True)
    folder, manifest, prepared = _export(model, tmp_path)
    c = manifest["coreml"]
    assert (
        c["op_counts"]["constexpr_blockwise_shift_scale"] == 16
    )  # untied by the rotation; Hadamard factors not compressed
    assert c["op_counts"]["matmul"] > 2 * 2  # attention (2 per layer) + the online Hadamards
    from export.llm.parity import EagerLLMRunner
    from runtime.coreml_runner import CoreMLRunner
    from runtime.generate import LLMStepper
    from runtime.manifest import load_manifest

    tokens = torch.randint(0, 133, (10,), generator=torch.Generator().manual_seed(2))
    a = _chunks(LLMStepper(CoreMLRunner(folder, load_manifest(folder), interpreter=True)), tokens, (6, 1, 3))
    r = _chunks(LLMStepper(EagerLLMRunner(prepared.wrapper, 40)), tokens, (6, 1, 3))
    for x, y in zip(a, r):
        assert torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=0) > 0.999


def test_linux_runner_says_it_is_not_apples_runtime(tiny_coreml, capsys):
    from runtime.coreml_runner import CoreMLRunner
    from runtime.manifest import load_manifest

    folder, _, _ = tiny_coreml
    runner = CoreMLRunner(folder, load_manifest(folder), interpreter=True)
    assert runner.engine == "mil-interpreter"
    assert "needs macOS" in capsys.readouterr().err


@pytest.mark.skipif(
    platform.system() != "Darwin",
    reason="CoreML prediction needs macOS (Apple's runtime); Linux checks the MIL program instead",
)
def test_apple_runtime_matches_eager_simulation(tiny_coreml):
    from export.llm.parity import EagerLLMRunner
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    folder, manifest, prepared = tiny_coreml
    art = LLMStepper(open_runner(folder))
    assert art.runner.engine == "coreml"
    ref = LLMStepper(EagerLLMRunner(prepared.wrapper, manifest["max_seq_len"]))
    tokens = torch.randint(0, 133, (12,), generator=torch.Generator().manual_seed(1))
    for a, r in zip(_chunks(art, tokens, (8, 1, 3)), _chunks(ref, tokens, (8, 1, 3))):
        assert torch.nn.functional.cosine_similarity(a.double(), r.double(), dim=0) > 0.99  # fp16 compute


def test_unsupported_quantization_is_refused(tmp_path):
    with pytest.raises(HandheldError, match="per block of 32"):
        _export(_tiny(), tmp_path, LLMQuantConfig(group_size=64))


def test_executorch_coreml_delegate_pte_is_one_delegate_and_matches_eager(tmp_path):
    """The CoreML-delegate .pte: the whole graph in one CoreML delegate (states taken over),
    its int4 weights stored by the delegate's quantizer; the mlpackage unpacked from the .pte
    file, interpreted op by op, agrees with eager with those weights simulated. The threshold is
    lowered so the tiny model's weights are quantized too (the real default skips < 65536), and
    the context is long enough that the RoPE tables (160 x 32; a head_dim the quantizer's blocks
    of 32 divide, as SmolLM2's 64) pass that threshold: they must stay fp16 (int4 positions took
    the real 2,048-token delegate to 22.9 dB)."""
    from export.backends.coreml import delegate_package, lower_coreml_delegate
    from export.backends.executorch import Method
    from export.llm.coreml_check import check_delegate_parity
    from export.llm.lower_coreml import DELEGATE_QUANT, delegate_quant
    from export.llm.wrapper_coreml import StatefulDecoder
    from runtime.mil_interpreter import MILInterpreter

    model = _tiny(head_dim=32)
    quant = delegate_quant(model.args, 160, {**DELEGATE_QUANT, "weight_threshold": 2048})
    assert quant["weight_threshold"] == 160 * 32  # the tables' 5,120 elements; every linear is larger
    decoder = StatefulDecoder(model, 160).eval()
    method = Method(decoder, decoder.example_inputs(), decoder.dynamic_shapes())
    summary = lower_coreml_delegate(method, tmp_path / "d.pte", quant)
    assert summary["delegate_backend"] == "CoreMLBackend" and summary["ops_outside_delegate"] == 0
    ops = [
        op.op_type for op in MILInterpreter(delegate_package(tmp_path / "d.pte", tmp_path / "unpacked")).fn.operations
    ]
    tied = model.lm_head.weight is model.embed_tokens.weight  # one constant serves the gather and lm_head
    assert ops.count("constexpr_blockwise_shift_scale") == 2 * 7 + (
        1 if tied else 2
    )  # 7 linears per layer, lm_head, embedding
    assert "coreml_update_state" in ops  # the KV cache is a CoreML state
    tokens = torch.randint(0, 133, (40,), generator=torch.Generator().manual_seed(4))
    report = check_delegate_parity(tmp_path / "d.pte", model, tokens[:39], quant, prefill=20)
    assert report["passed"], report
    assert report["metrics"]["logits_cosine_min"] > 0.999 and report["metrics"]["positions"] == 19
