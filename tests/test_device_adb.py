"""`handheld bench --device adb:SERIAL` against tests/fakes/adb (records calls, canned output)."""

import json
import os
from pathlib import Path

import bundle_fakes as fakes
import pytest

from export.bundle import contract
from export.device import DeviceBenchConfig, DeviceSpec, run_device_bench
from export.device.results import validate_record
from runtime.errors import HandheldError

FAKES = Path(__file__).parent / "fakes"
SERIAL = "emulator-5554"


@pytest.fixture(scope="module")
def etdump(tmp_path_factory):
    return fakes.make_etdump(tmp_path_factory.mktemp("etdump"))


@pytest.fixture
def phone(tmp_path, monkeypatch, etdump):
    """The fake adb first on PATH; returns a function giving the calls made so far."""
    log, fs = tmp_path / "adb.log", tmp_path / "phone"
    fs.mkdir()
    record = tmp_path / "app_record.json"
    record.write_text(json.dumps(fakes.app_record("sam")))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_FS", str(fs))
    monkeypatch.setenv("FAKE_ADB_ETDUMP", str(etdump))
    monkeypatch.setenv("FAKE_ADB_APP_RECORD", str(record))
    calls = lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []  # noqa: E731
    calls.fs = fs
    return calls


@pytest.fixture
def runner(tmp_path):
    path = tmp_path / "bin" / "executor_runner"
    path.parent.mkdir()
    path.write_bytes(b"\x7fELF fake")
    return path


def config(tmp_path, runner=None, threads=(2,), iterations=3, **kw):
    return DeviceBenchConfig(
        DeviceSpec.parse(f"adb:{SERIAL}"),
        threads=threads,
        iterations=iterations,
        runner=runner,
        out_dir=tmp_path / "results",
        **kw,
    )


def shell_lines(calls):
    return [c[3] for c in calls if c[2] == "shell"]


def test_runner_mode_pushes_runs_and_pulls_an_etdump(tmp_path, phone, runner):
    art = fakes.make_sam(tmp_path)
    record = run_device_bench(art, config(tmp_path, runner, threads=(1, 4), warmup=2))

    calls = phone()
    assert all(c[:2] == ["-s", SERIAL] for c in calls)
    remote = "/data/local/tmp/handheld/sam"
    pushes = [c[3:] for c in calls if c[2] == "push"]
    assert [str(art / "model.pte"), f"{remote}/model.pte"] in pushes and [
        str(runner),
        f"{remote}/executor_runner",
    ] in pushes
    runs = [line for line in shell_lines(calls) if "executor_runner " in line]
    assert len(runs) == 2 * (2 + 3) + 1  # per thread count: warm-up + measured, one process each; + 1 traced
    assert sum("--cpu_threads=1" in r for r in runs) == 5 and sum("--cpu_threads=4" in r for r in runs) == 6
    assert [r for r in runs if "--etdump_path" in r] == [runs[-1]]  # the traced run is not a measured one
    assert ["pull", f"{remote}/etdump.etdp", str(tmp_path / "results" / "etdump.etdp")] == calls[-1][2:]

    validate_record(record)
    assert record["device"] == {
        "type": "android",
        "id": SERIAL,
        "name": "Pixel 8",
        "os": "Android 15",
        "abi": "arm64-v8a",
    }
    assert record["runner"] == "executorch-runner" and record["kind"] == "sam" and record["parity"]["passed"]
    by_threads = {m["threads"]: m for m in record["metrics"]}
    assert by_threads[1]["samples"] == [12.0, 13.0, 14.0]  # the two 50 ms warm-ups are discarded
    assert by_threads[4]["value"] == 18.0 and by_threads[4]["unit"] == "ms"
    ops = [h["op"] for h in record["hotspots"]]
    assert "addmm.out" in ops and "OPERATOR_CALL" not in ops
    assert abs(sum(h["share"] for h in record["hotspots"]) - 1) < 1e-6
    assert json.loads((tmp_path / "results" / "bench.json").read_text()) == record


def test_a_runner_without_event_tracer_still_benchmarks(tmp_path, phone, runner, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_ADB_NO_TRACER", "1")
    record = run_device_bench(fakes.make_sam(tmp_path), config(tmp_path, runner, threads=(2,), iterations=2, warmup=0))
    validate_record(record)
    assert "hotspots" not in record and record["metrics"][0]["samples"] == [50.0, 50.0]
    assert "no ETDump profile" in capsys.readouterr().out


def test_llm_runner_gets_tokenizer_and_reports_token_rates(tmp_path, phone):
    llama_main = tmp_path / "llama_main"
    llama_main.write_bytes(b"fake")
    art = fakes.make_llm(tmp_path)
    record = run_device_bench(art, config(tmp_path, llama_main, iterations=2, warmup=1, seq_len=999))
    runs = [line for line in shell_lines(phone()) if "./llama_main" in line]
    assert len(runs) == 3
    assert "--tokenizer_path=tokenizer.json" in runs[0] and "--seq_len=128" in runs[0]  # capped at max_seq_len
    assert "--model_path=model.pte" in runs[0] and "--temperature=0" in runs[0]
    values = {m["name"]: m["value"] for m in record["metrics"]}
    # canned stats: 12 prompt tokens in 60 ms, 64 decoded tokens in 800 ms, load 400 ms
    assert values == pytest.approx(
        {"prefill_tok_s": 200.0, "decode_tok_s": 80.0, "time_to_first_token_ms": 60.0, "model_load_ms": 400.0}
    )
    assert "hotspots" not in record


def test_app_mode_pushes_a_bundle_and_pulls_the_apps_record(tmp_path, phone):
    art = fakes.make_sam(tmp_path)
    record = run_device_bench(art, config(tmp_path, threads=(1, 2), iterations=3))
    calls = phone()
    starts = [line for line in shell_lines(calls) if line.startswith("am start")]
    assert len(starts) == 1  # the app cannot set thread counts: one run, no --threads
    assert f"-n {contract.ANDROID_PACKAGE}/{contract.ANDROID_BENCH_ACTIVITY}" in starts[0]
    assert "--es model sam-executorch" in starts[0] and "--ei iterations 3" in starts[0] and "threads" not in starts[0]
    assert f"--es out {contract.ANDROID_FILES_DIR}/bench.json" in starts[0]
    assert (
        phone.fs / contract.ANDROID_BUNDLE_DIR.lstrip("/") / contract.BUNDLE_MANIFEST
    ).is_file()  # not nested one level down
    validate_record(record)
    assert record["runner"] == "app" and record["device"]["name"] == "Pixel 8"  # the host's view of the device wins
    assert json.loads((tmp_path / "results" / "bench.json").read_text()) == record


def test_longvu_needs_the_app_not_a_runner(tmp_path, phone, runner):
    with pytest.raises(HandheldError, match="omit --runner"):
        run_device_bench(fakes.make_longvu(tmp_path), config(tmp_path, runner))


def test_unknown_serial_and_missing_adb(tmp_path, phone, monkeypatch):
    art = fakes.make_sam(tmp_path)
    cfg = DeviceBenchConfig(DeviceSpec.parse("adb:R58M123"), threads=(1,), iterations=1)
    with pytest.raises(HandheldError, match="adb get-state failed .*device 'R58M123' not found"):
        run_device_bench(art, cfg)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(HandheldError, match="`adb` is not on PATH"):
        run_device_bench(art, cfg)


def test_device_specs_and_config_are_validated(tmp_path):
    assert DeviceSpec.parse("host").is_host and DeviceSpec.parse("ios:ABC") == DeviceSpec("ios", "ABC")
    for bad in ("adb", "adb:", "usb:1", "host:x"):
        with pytest.raises(HandheldError, match="unknown device"):
            DeviceSpec.parse(bad)
    with pytest.raises(HandheldError, match="runner binary .* does not exist"):
        DeviceBenchConfig(DeviceSpec("adb", "x"), threads=(1,), iterations=1, runner=tmp_path / "nope")
    with pytest.raises(HandheldError, match="iterations >= 1"):
        DeviceBenchConfig(DeviceSpec("adb", "x"), threads=(1,), iterations=0)


def test_cli_bench_on_adb(tmp_path, phone, runner, capsys):
    from export.cli import main

    art = fakes.make_sam(tmp_path)
    out = tmp_path / "r.json"
    argv = [
        "bench",
        str(art),
        "--device",
        f"adb:{SERIAL}",
        "--runner",
        str(runner),
        "--threads",
        "2",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    record = validate_record(json.loads(out.read_text()))
    assert record["metrics"][0]["samples"] == [50.0, 50.0]  # no warm-up: the slow first runs are measured
    assert "forward_ms" in capsys.readouterr().out
