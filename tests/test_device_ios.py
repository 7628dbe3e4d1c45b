"""`handheld bench --device ios:UDID` against tests/fakes/xcrun (devicectl calls recorded)."""

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
UDID = "00008120-001A2B3C4D5E6F70"


@pytest.fixture
def iphone(tmp_path, monkeypatch):
    log, fs = tmp_path / "xcrun.log", tmp_path / "container"
    fs.mkdir()
    record = tmp_path / "app_record.json"
    record.write_text(json.dumps(fakes.app_record("sam", "coreml", "ios")))
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"LOG": log, "FS": fs, "APP_RECORD": record}.items():
        monkeypatch.setenv(f"FAKE_XCRUN_{key}", str(value))
    calls = lambda: [json.loads(line) for line in log.read_text().splitlines()]  # noqa: E731
    calls.fs = fs
    return calls


def test_app_benchmark_mode_over_devicectl(tmp_path, iphone):
    art = fakes.make_sam(tmp_path, "coreml")
    cfg = DeviceBenchConfig(
        DeviceSpec.parse(f"ios:{UDID}"), threads=(2,), iterations=4, warmup=1, out_dir=tmp_path / "out"
    )
    record = run_device_bench(art, cfg)

    calls = iphone()
    container = ["--device", UDID, "--domain-type", "appDataContainer", "--domain-identifier", contract.IOS_BUNDLE_ID]
    copy_to, launch, copy_from = calls
    assert copy_to[:4] == ["devicectl", "device", "copy", "to"] and copy_to[4:10] == container
    assert copy_to[-2:] == ["--destination", contract.IOS_BUNDLE_DIR]
    assert launch[:9] == [
        "devicectl",
        "device",
        "process",
        "launch",
        "--device",
        UDID,
        "--terminate-existing",
        "--console",
        contract.IOS_BUNDLE_ID,
    ]
    app_args = launch[9:]
    assert app_args[0] == "--benchmark"
    flags = dict(zip(app_args[1::2], app_args[2::2]))
    assert flags == {
        "--bundle": contract.IOS_BUNDLE_DIR,
        "--model": "sam-coreml",
        "--warmup": "1",
        "--iterations": "4",
        "--prompt": cfg.prompt,
        "--out": "Documents/bench.json",
    }
    assert copy_from[2:4] == ["copy", "from"] and copy_from[-3:] == [
        "Documents/bench.json",
        "--destination",
        str(tmp_path / "out" / "app-bench.json"),
    ]
    assert (iphone.fs / contract.IOS_BUNDLE_DIR / "sam-coreml" / "model.mlpackage" / "Manifest.json").is_file()

    validate_record(record)
    assert record["device"]["type"] == "ios" and record["device"]["id"] == UDID
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == record


def test_ios_refuses_what_its_app_cannot_run(tmp_path, iphone):
    cfg = DeviceBenchConfig(DeviceSpec.parse(f"ios:{UDID}"), threads=(1,), iterations=1)
    with pytest.raises(HandheldError, match="the ios app runs sam on coreml"):
        run_device_bench(fakes.make_sam(tmp_path), cfg)


def test_unknown_udid_and_no_xcode(tmp_path, iphone, monkeypatch):
    art = fakes.make_sam(tmp_path, "coreml")
    cfg = DeviceBenchConfig(DeviceSpec.parse("ios:FFFF"), threads=(1,), iterations=1)
    with pytest.raises(HandheldError, match="devicectl copy to .* failed .*device was not found"):
        run_device_bench(art, cfg)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(HandheldError, match=r"`xcrun` is not on PATH\n  fix: iOS benchmarks need macOS with Xcode 15"):
        run_device_bench(art, cfg)
