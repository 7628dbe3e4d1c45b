"""`handheld report`: PNG + self-contained HTML from host and device records."""

import json
import re

import bundle_fakes as fakes
import pytest
from test_device_results import LLM_HOST, LONGVU_HOST, SAM_HOST

from export.cli import main
from export.device import results
from export.report import parity_rows, render_report
from runtime.errors import HandheldError


@pytest.fixture
def result_files(tmp_path):
    llm = results.host_record(LLM_HOST, fakes.make_llm(tmp_path))
    sam = results.host_record(SAM_HOST, fakes.make_sam(tmp_path))
    longvu = results.host_record(LONGVU_HOST, fakes.make_longvu(tmp_path))
    phone = fakes.app_record("sam")
    phone["hotspots"] = results.hotspots(
        [("native_call_convolution.out", [4.0, 5.0]), ("native_call_permute_copy.out", [2.0])]
    )
    paths = []
    for name, record in {"llm": llm, "sam": sam, "longvu": longvu, "phone": phone}.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(record))
    return paths


def test_report_renders_png_and_self_contained_html(tmp_path, result_files, capsys):
    assert main(["report", *map(str, result_files), "--out", str(tmp_path / "rep")]) == 0
    png, page = tmp_path / "rep" / "report.png", (tmp_path / "rep" / "report.html").read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing loaded from elsewhere
    assert "data:image/png;base64," in page
    for text in (
        "decode_tok_s",
        "first_mask_ms",
        "dino_frames_per_s",
        "tokens_after_stc",
        "convolution.out",
        "greedy_agreement=0.97",
        "iou_worst=0.91",
        "selection_identical=True",
    ):
        assert text in page
    assert "wrote" in capsys.readouterr().out


def test_parity_table_has_one_row_per_model_and_backend(result_files):
    records = [json.loads(p.read_text()) for p in result_files]
    _, rows = parity_rows(records + records)
    assert [r[0] for r in rows] == ["llm [executorch]", "squeezesam [executorch]", "longvu [executorch]"]
    assert rows[0][1] == "True"


def test_nested_parity_reports_are_flattened_without_tolerances():
    parity = {
        "passed": False,
        "tolerances": {"int8": {"worst_iou": 0.7}},
        "int8": {"median_iou": 1.0, "worst_iou": 0.0, "cases": 15},
        "metrics": {"logits_sqnr_db": 22.1},
        "failures": ["int8: worst IoU 0.0 < 0.7"],
    }
    record = {"model": "squeezesam", "backend": "executorch", "parity": parity}
    _, rows = parity_rows([record])
    assert rows == [
        ["squeezesam [executorch]", "False", "int8.median_iou=1; int8.worst_iou=0; int8.cases=15; logits_sqnr_db=22.1"]
    ]


def test_bad_inputs(tmp_path, result_files):
    with pytest.raises(HandheldError, match="does not exist"):
        render_report([tmp_path / "missing.json"], tmp_path / "rep")
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"decode_tok_s": 3}))  # a pre-schema bench file
    with pytest.raises(HandheldError, match="does not follow bench.schema.json"):
        render_report([raw], tmp_path / "rep")
    with pytest.raises(HandheldError, match="no benchmark results"):
        render_report([], tmp_path / "rep")
