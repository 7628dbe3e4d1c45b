"""The `make demo` phone step on fake artifacts laid out as the model steps leave them."""

import json

import bundle_fakes as fakes
from test_device_results import LLM_HOST, LONGVU_HOST, SAM_HOST

from export.bundle import demo


def test_demo_bundles_both_targets_and_renders_the_report(tmp_path, monkeypatch):
    fakes.make_llm(tmp_path, name=demo.LLM_DIR)
    fakes.make_sam(tmp_path / demo.SAM_DIR, "executorch", "executorch")
    fakes.make_sam(tmp_path / demo.SAM_DIR, "coreml", "coreml")
    fakes.make_longvu(tmp_path, name=demo.LONGVU_DIR)
    (tmp_path / demo.BENCH_JSON["llm"]).write_text(json.dumps(LLM_HOST))
    (tmp_path / demo.BENCH_JSON["longvu"]).write_text(json.dumps(LONGVU_HOST))
    monkeypatch.setattr(demo, "_sam_bench", lambda folder: SAM_HOST)  # the real one times a real .pte

    step = demo.run_demo(tmp_path)
    lines = step.lines

    assert (
        "android" in lines[1]
        and "llm (executorch), sam (executorch), longvu (executorch)" in lines[1]
        and lines[1].endswith("verified")
    )
    assert "ios" in lines[2] and "sam (coreml)" in lines[2] and lines[2].endswith("verified")
    assert (tmp_path / "bundles" / "android.zip").is_file() and (tmp_path / "bundles" / "ios.zip").is_file()
    assert [r.parity for r in step.rows] == ["verified", "verified"]
    assert sorted(p.name for p in step.bench_records) == ["llm.json", "longvu.json", "sam.json"]
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == ["llm.json", "longvu.json", "sam.json"]

    # a second run replaces its own bundles (Handheld wrote them) without a flag
    again = demo.run_demo(tmp_path)
    assert [r.parity for r in again.rows] == ["verified", "verified"]


def test_a_missing_artifact_is_reported_not_fatal(tmp_path, monkeypatch):
    fakes.make_llm(tmp_path, name=demo.LLM_DIR)
    fakes.make_sam(tmp_path / demo.SAM_DIR, "executorch", "executorch")
    (tmp_path / demo.BENCH_JSON["llm"]).write_text(json.dumps(LLM_HOST))
    monkeypatch.setattr(demo, "_sam_bench", lambda folder: SAM_HOST)
    step = demo.run_demo(tmp_path)
    lines = step.lines
    assert step.rows[0].parity == "FAILED"
    assert "android  not bundled:" in lines[1] and "longvu-executorch does not exist" in lines[1]
