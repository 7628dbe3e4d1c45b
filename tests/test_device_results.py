"""Benchmark records: parsing runner output, host records, the schema, hot spots."""

import json

import bundle_fakes as fakes
import pytest

from export.device import results
from runtime.errors import HandheldError

LLM_HOST = {  # the shape export/llm/bench.py returns
    "kind": "llm",
    "artifact": "x",
    "backend": "executorch",
    "quantization": "8da4w-g32",
    "prompt_tokens": 64,
    "decode_steps": 128,
    "results": {
        "handheld": {
            "size_mb": 190.0,
            "path": "x",
            "by_threads": {
                "1": {
                    "threads": 1,
                    "prefill_tok_s": 780.0,
                    "decode_tok_s": 159.0,
                    "time_to_first_token_ms": 82.0,
                    "peak_rss_mb": 310.0,
                    "runs": 3,
                },
                "2": {
                    "threads": 2,
                    "prefill_tok_s": 1231.0,
                    "decode_tok_s": 281.0,
                    "time_to_first_token_ms": 52.0,
                    "peak_rss_mb": 320.0,
                    "runs": 3,
                },
            },
        },
        "executorch_export_llm": {
            "size_mb": 190.0,
            "path": "y",
            "by_threads": {
                "1": {
                    "threads": 1,
                    "prefill_tok_s": 700.0,
                    "decode_tok_s": 150.0,
                    "time_to_first_token_ms": 91.0,
                    "peak_rss_mb": 300.0,
                    "runs": 3,
                }
            },
        },
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


SAM_HOST = {
    "kind": "sam",
    "rows": [  # the shape export/sam/bench.py returns
        {
            "model": "squeezesam int8",
            "threads": 1,
            "size_mb": 0.03,
            "first_mask_ms": 17.6,
            "per_click_ms": 1.1,
            "peak_rss_mb": 405.0,
        },
        {
            "model": "teacher fp32",
            "threads": 1,
            "size_mb": 38.0,
            "first_mask_ms": 95.0,
            "per_click_ms": 4.0,
            "peak_rss_mb": 600.0,
        },
    ],
}
LONGVU_HOST = {
    "kind": "longvu",
    "by_threads": {
        "2": {  # the shape export/longvu/bench.py returns
            "threads": 2,
            "peak_rss_mb": 499.0,
            "videos": {
                "bikes": {
                    "counts": {"frames_sampled": 10, "frames_after_dedup": 8, "tokens_after_stc": 217},
                    "dino_frames_per_s": 6265.0,
                    "select_ms": 7.3,
                    "time_to_first_token_ms": 6.8,
                    "decode_tok_s": 3988.7,
                }
            },
        }
    },
}


def test_sam_and_longvu_host_records(tmp_path):
    sam = results.validate_record(results.host_record(SAM_HOST, fakes.make_sam(tmp_path)))
    assert [(m["variant"], m["name"], m["value"]) for m in sam["metrics"]][:3] == [
        ("squeezesam int8", "first_mask_ms", 17.6),
        ("squeezesam int8", "per_click_ms", 1.1),
        ("squeezesam int8", "peak_rss_mb", 405.0),
    ]
    assert not any(m["name"] == "size_mb" for m in sam["metrics"])  # sizes travel as size_bytes
    longvu = results.validate_record(results.host_record(LONGVU_HOST, fakes.make_longvu(tmp_path)))
    got = {(m["name"], m.get("variant"), m["unit"]): m["value"] for m in longvu["metrics"]}
    assert (
        got[("dino_frames_per_s", "bikes", "frames/s")] == 6265.0 and got[("tokens_after_stc", "bikes", "count")] == 217
    )
    assert got[("peak_rss_mb", None, "MiB")] == 499.0 and all(m["threads"] == 2 for m in longvu["metrics"])


def test_unknown_shapes_fall_back_to_unit_suffixes():
    raw = {
        "squeezesam": {"threads": 2, "first_mask_ms": 31.5, "click_ms": 30.0, "size_mb": 3.0},
        "ratio": 5.1,
        "ok": True,
    }
    assert [(m["name"], m["variant"], m["threads"]) for m in results._flat_metrics(raw)] == [
        ("first_mask_ms", "squeezesam", 2),
        ("click_ms", "squeezesam", 2),
    ]


def test_runner_output_parsing():
    text = "I 00:00:00.1 executorch:executor_runner.cpp:160] 10 inference took 123.400000 ms, avg 12.340000 ms\n"
    assert results.parse_runner_ms(text) == 12.34
    with pytest.raises(HandheldError, match="no timing line"):
        results.parse_runner_ms("Segmentation fault")
    stats = {
        "prompt_tokens": 50,
        "generated_tokens": 11,
        "model_load_start_ms": 0,
        "model_load_end_ms": 250,
        "inference_start_ms": 1000,
        "prompt_eval_end_ms": 1100,
        "first_token_ms": 1100,
        "inference_end_ms": 1600,
    }
    parsed = results.parse_llm_observer("Hello world\nPyTorchObserver " + json.dumps(stats) + "\n")
    assert parsed == {"prefill_tok_s": 500.0, "decode_tok_s": 20.0, "time_to_first_token_ms": 100, "model_load_ms": 250}
    with pytest.raises(HandheldError, match="PyTorchObserver"):
        results.parse_llm_observer("no stats")


def test_hotspots_aggregate_by_operator_and_skip_framework_events():
    events = [
        ("native_call_addmm.out", [3.0, 1.0]),
        ("OPERATOR_CALL", [9.0]),
        ("native_call_relu.out", [1.0]),
        ("Fully Connected (NC, QDU8, F32, QB4W)", [5.0]),
        ("native_call_addmm.out", [2.0]),
        ("Method::execute", [20.0]),
    ]
    rows = results.hotspots(events, top=2)
    assert rows == [
        {"op": "addmm.out", "total_ms": 6.0, "calls": 3, "share": 0.5},
        {"op": "Fully Connected (NC, QDU8, F32, QB4W)", "total_ms": 5.0, "calls": 1, "share": 5 / 12},
    ]


def test_metric_units_and_schema_errors():
    assert results.metric("click_ms", [3, 1, 2]) == {
        "name": "click_ms",
        "value": 2.0,
        "unit": "ms",
        "samples": [3.0, 1.0, 2.0],
    }
    with pytest.raises(ValueError, match="unit suffix"):
        results.metric("latency", [1.0])
    bad = fakes.app_record()
    bad["metrics"][0]["unit"] = "seconds"
    del bad["device"]["name"]
    with pytest.raises(
        HandheldError, match=r"(?s)at \$\.device: 'name' is a required property.*at \$\.metrics\[0\]\.unit"
    ):
        results.validate_record(bad, "app.json")


def test_unreadable_etdump_is_a_clear_error(tmp_path):
    junk = tmp_path / "etdump.etdp"
    junk.write_bytes(b"not flatbuffers")
    with pytest.raises(HandheldError, match="not a readable ETDump"):
        results.hotspots_from_etdump(junk)
