"""The emulated aarch64 lane: ExecuTorch artifacts on ARM's kernels (qemu-user), against the same
artifact on this machine and against the eager model. The `arm` tests need the lane that
`make arm-lane` builds (CI's `make test` builds it first); without it they fail with its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.arm.lane import FAMILIES, Lane, check_tools, run_program, setup, wheel_pins
from export.arm.parity import check_aarch64, kernel_family
from runtime.errors import HandheldError
from runtime.manifest import load_manifest


def test_kernel_family_follows_the_cpu_features():
    assert kernel_family({"asimddp": True, "i8mm": True}) == "i8mm"
    assert kernel_family({"asimddp": True, "i8mm": False}) == "dotprod"
    assert kernel_family({}) == "neon"


def test_wheels_are_pinned_to_the_hosts_versions_without_local_tags():
    pins = dict(p.split("==") for p in wheel_pins())
    assert pins["torch"] == torch.__version__.split("+")[0]
    assert all("+" not in v for v in pins.values())


def test_missing_host_tools_name_the_packages_and_the_fix(monkeypatch):
    import export.arm.lane as lane

    monkeypatch.setattr(lane, "TOOLS", {"qemu-aarch64-nowhere": "qemu-user-static"})
    with pytest.raises(HandheldError) as err:
        check_tools()
    assert "qemu-user-static" in str(err.value) and "make arm-lane" in err.value.fix


def test_a_lane_that_was_never_set_up_is_built_or_refused_before_any_work(monkeypatch, tmp_path):
    import export.arm.lane as lane

    monkeypatch.setenv("HANDHELD_CACHE", str(tmp_path))
    monkeypatch.setattr(lane, "TOOLS", {"qemu-aarch64-nowhere": "qemu-user-static"})
    with pytest.raises(HandheldError, match="qemu-user-static"):
        setup(progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


@pytest.fixture(scope="module")
def lane() -> Lane:
    return setup(progress=False)


@pytest.mark.arm
def test_a_program_that_crashes_under_emulation_is_a_clear_error(lane, tmp_path):
    bad = tmp_path / "broken.pte"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(HandheldError, match="emulated aarch64 run of broken.pte failed"):
        run_program(lane, bad, "forward", [[np.zeros(1, np.float32)]], "dotprod", timeout=600)


def _tiny_llm(folder, backend: str):
    """A tiny random LLM exported to `backend` (GPTQ on random tokens), its PreparedModel, and a
    64-token window inside its vocabulary."""
    from export.llm.model import Llama
    from export.llm.quant_onnx import simulate_matmulnbits
    from export.llm.quantize import quantize_llm
    from tests.conftest import tiny_llama_args
    from tests.llm_helpers import export_tiny, random_calibration

    torch.manual_seed(0)
    model = Llama(tiny_llama_args()).eval().requires_grad_(False)
    quantizer = {"executorch": quantize_llm, "onnx": simulate_matmulnbits}[backend]
    out, _, prepared = export_tiny(
        model, folder, backend, quantizer, max_seq_len=64, calibration=random_calibration(model)
    )
    tokens = torch.randint(0, model.args.vocab_size, (64,), generator=torch.Generator().manual_seed(1))
    return out, prepared, tokens


@pytest.mark.arm
def test_tiny_llm_on_arm_kernels_matches_x86_and_eager(tmp_path):
    from export.manifest import update_manifest

    folder, prepared, tokens = _tiny_llm(tmp_path / "llm", "executorch")
    host_parity = {"passed": True, "reference": "a host parity report the lane must keep"}
    update_manifest(folder, parity=host_parity)
    report = check_aarch64(folder, FAMILIES, prepared=prepared, progress=False, tokens=tokens)
    assert report["passed"], report["failures"]
    for family in FAMILIES:
        r = report[family]
        assert r["kernel_family"] == family  # the emulated CPU offered that family's instructions
        assert r["metrics"]["steps"] == 24
        assert r["metrics"]["vs_host_top1_agreement"] >= 0.95
    manifest = load_manifest(folder)
    assert manifest["parity"]["aarch64"]["passed"] is True
    assert {k: v for k, v in manifest["parity"].items() if k != "aarch64"} == host_parity  # kept beside it
    update_manifest(folder, parity=host_parity)  # a later host parity run keeps the lane's report
    assert load_manifest(folder)["parity"]["aarch64"] == manifest["parity"]["aarch64"]
    json.dumps(manifest, allow_nan=False)  # strict JSON


@pytest.mark.arm
def test_tiny_squeezesam_int8_on_arm_kernels(tiny_artifacts, tiny_checkpoint):
    from export.sam.model import load_checkpoint

    folder = tiny_artifacts / "executorch"
    report = check_aarch64(folder, ("dotprod",), prepared=load_checkpoint(tiny_checkpoint), progress=False)
    r = report["dotprod"]
    assert r["kernel_family"] == "dotprod" and r["metrics"]["cases"] == 15
    # a random model's near-zero logits flip under int8 (host parity is recorded, not enforced,
    # for it), but ARM and x86 must agree with each other
    assert r["metrics"]["vs_host_median_iou"] >= 0.97
    assert all(f.startswith("dotprod: vs_eager") for f in report["failures"])
    json.dumps(load_manifest(folder), allow_nan=False)


@pytest.mark.arm
def test_tiny_llm_onnx_on_onnxruntimes_arm_kernels(tmp_path):
    folder, prepared, tokens = _tiny_llm(tmp_path / "onnx", "onnx")
    report = check_aarch64(folder, ("i8mm",), prepared=prepared, progress=False, tokens=tokens)
    assert report["passed"], report["failures"]
    m = report["i8mm"]["metrics"]
    assert report["i8mm"]["kernel_family"] == "i8mm" and m["steps"] == 24
    # the cache state went from step to step: decode steps agree as well as the prefill
    assert min(m["vs_host_cosine_per_step"][1:]) >= 0.99


@pytest.mark.arm
def test_tiny_squeezesam_int8_onnx_on_arm_kernels(tiny_artifacts, tiny_checkpoint):
    from export.sam.model import load_checkpoint

    report = check_aarch64(
        tiny_artifacts / "onnx", ("dotprod",), prepared=load_checkpoint(tiny_checkpoint), progress=False
    )
    assert report["dotprod"]["metrics"]["vs_host_median_iou"] >= 0.97
    assert all(f.startswith("dotprod: vs_eager") for f in report["failures"])


@pytest.mark.arm
@pytest.mark.slow
def test_real_smollm2_pte_on_arm_kernels(smollm2_artifact):
    folder, _, prepared = smollm2_artifact
    report = check_aarch64(folder, FAMILIES, prepared=prepared, progress=False)
    assert report["passed"], report["failures"]
    for family in FAMILIES:
        m = report[family]["metrics"]
        assert report[family]["kernel_family"] == family
        print(family, {k: v for k, v in m.items()}, {k: report[family][k] for k in ("import_s", "run_s")})
