"""Benchmark records: parsing runner output, host records, the schema, hot spots."""

import json

import pytest

import bundle_fakes as fakes
from export.device import results
from export.errors import HandheldError

LLM_HOST = {  # the shape export/llm/bench.py returns
    "kind": "llm", "artifact": "x", "backend": "executorch", "quantization": "8da4w-g32", "prompt_tokens": 64, "decode_steps": 128,
    "results": {
        "handheld": {"size_mb": 190.0, "path": "x", "by_threads": {
            "1": {"threads": 1, "prefill_tok_s": 780.0, "decode_tok_s": 159.0, "time_to_first_token_ms": 82.0, "peak_rss_mb": 310.0, "runs": 3},
            "2": {"threads": 2, "prefill_tok_s": 1231.0, "decode_tok_s": 281.0, "time_to_first_token_ms": 52.0, "peak_rss_mb": 320.0, "runs": 3}}},
        "executorch_export_llm": {"size_mb": 190.0, "path": "y", "by_threads": {
            "1": {"threads": 1, "prefill_tok_s": 700.0, "decode_tok_s": 150.0, "time_to_first_token_ms": 91.0, "peak_rss_mb": 300.0, "runs": 3}}},
    },
}


def test_llm_host_record_keeps_the_family_fields_and_follows_the_schema(tmp_path):
    art = fakes.make_llm(tmp_path)
    record = results.host_record(LLM_HOST, art)
    results.validate_record(record)
    assert record["results"] == LLM_HOST["results"] and record["artifact"] == "x"  # host output only gains keys
    decode = {(m["variant"], m["threads"]): m["value"] for m in record["metrics"] if m["name"] == "decode_tok_s"}
    assert decode == {("handheld", 1): 159.0, ("handheld", 2): 281.0, ("executorch_export_llm", 1): 150.0}
    assert {m["unit"] for m in record["metrics"]} == {"tok/s", "ms", "MiB"}
    assert record["device"]["type"] == "host" and record["runner"] == "handheld-host"
    assert record["size_bytes"] == sum(p.stat().st_size for p in art.iterdir() if p.name != "manifest.json")
    assert record["parity"]["passed"] is True


def test_other_families_fall_back_to_unit_suffixes(tmp_path):
    raw = {"kind": "sam", "squeezesam": {"threads": 2, "first_mask_ms": 31.5, "click_ms": 30.0, "peak_rss_mb": 90}, "ratio": 5.1, "ok": True}
    record = results.host_record(raw, fakes.make_sam(tmp_path))
    results.validate_record(record)
    assert [(m["name"], m["variant"], m["threads"]) for m in record["metrics"]] == [
        ("first_mask_ms", "squeezesam", 2), ("click_ms", "squeezesam", 2), ("peak_rss_mb", "squeezesam", 2)]


def test_runner_output_parsing():
    text = "I 00:00:00.1 executorch:executor_runner.cpp:160] 10 inference took 123.400000 ms, avg 12.340000 ms\n"
    assert results.parse_runner_ms(text) == 12.34
    with pytest.raises(HandheldError, match="no timing line"):
        results.parse_runner_ms("Segmentation fault")
    stats = {"prompt_tokens": 50, "generated_tokens": 11, "model_load_start_ms": 0, "model_load_end_ms": 250,
             "inference_start_ms": 1000, "prompt_eval_end_ms": 1100, "first_token_ms": 1100, "inference_end_ms": 1600}
    parsed = results.parse_llm_observer("Hello world\nPyTorchObserver " + json.dumps(stats) + "\n")
    assert parsed == {"prefill_tok_s": 500.0, "decode_tok_s": 20.0, "time_to_first_token_ms": 100, "model_load_ms": 250}
    with pytest.raises(HandheldError, match="PyTorchObserver"):
        results.parse_llm_observer("no stats")


def test_hotspots_aggregate_by_operator_and_skip_framework_events():
    events = [("native_call_addmm.out", [3.0, 1.0]), ("OPERATOR_CALL", [9.0]), ("native_call_relu.out", [1.0]),
              ("Fully Connected (NC, QDU8, F32, QB4W)", [5.0]), ("native_call_addmm.out", [2.0]), ("Method::execute", [20.0])]
    rows = results.hotspots(events, top=2)
    assert rows == [{"op": "addmm.out", "total_ms": 6.0, "calls": 3, "share": 0.5},
                    {"op": "Fully Connected (NC, QDU8, F32, QB4W)", "total_ms": 5.0, "calls": 1, "share": 5 / 12}]


def test_metric_units_and_schema_errors():
    assert results.metric("click_ms", [3, 1, 2]) == {"name": "click_ms", "value": 2.0, "unit": "ms", "samples": [3.0, 1.0, 2.0]}
    with pytest.raises(ValueError, match="unit suffix"):
        results.metric("latency", [1.0])
    bad = fakes.app_record()
    bad["metrics"][0]["unit"] = "seconds"
    del bad["device"]["name"]
    with pytest.raises(HandheldError, match=r"(?s)at \$\.device: 'name' is a required property.*at \$\.metrics\[0\]\.unit"):
        results.validate_record(bad, "app.json")


def test_unreadable_etdump_is_a_clear_error(tmp_path):
    junk = tmp_path / "etdump.etdp"
    junk.write_bytes(b"not flatbuffers")
    with pytest.raises(HandheldError, match="not a readable ETDump"):
        results.hotspots_from_etdump(junk)
