"""iOS benchmarks: the demo app's benchmark mode, driven with `xcrun devicectl` (Xcode 15+).

The app (ios_demo/, installed and signed from Xcode) is launched with benchmark arguments
after a one-artifact bundle is copied into its Documents folder; `--console` keeps devicectl
attached until the app exits, then the record it wrote is copied back. Thread counts are the
runtimes' own (CoreML schedules itself; the app sets none), so metrics carry no `threads`. macOS only: on any
other host `xcrun` is missing and this says so.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from export.bundle import contract
from export.device import DeviceBenchConfig
from export.device.results import hotspots_from_etdump, load_record, write_record
from export.device.shell import find_tool, run_tool
from runtime.manifest import load_manifest

XCRUN_FIX = "iOS benchmarks need macOS with Xcode 15+ (xcrun devicectl) and the demo app installed (ios_demo/README.md)"


class DeviceCtl:
    def __init__(self, udid: str):
        self.udid = udid
        self.xcrun = find_tool("xcrun", XCRUN_FIX)

    def __call__(self, *args: str, what: str, timeout_s: float = 600.0) -> str:
        return run_tool([self.xcrun, "devicectl", "device", *args], what, timeout_s)

    def _container(self) -> list[str]:
        return [
            "--device",
            self.udid,
            "--domain-type",
            "appDataContainer",
            "--domain-identifier",
            contract.IOS_BUNDLE_ID,
        ]

    def copy_to(self, local: Path, remote: str) -> None:
        self(
            "copy",
            "to",
            *self._container(),
            "--source",
            str(local),
            "--destination",
            remote,
            what=f"devicectl copy to {remote}",
        )

    def copy_from(self, remote: str, local: Path) -> Path:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self(
            "copy",
            "from",
            *self._container(),
            "--source",
            remote,
            "--destination",
            str(local),
            what=f"devicectl copy from {remote}",
        )
        return Path(local)

    def launch(self, arguments: list[str], timeout_s: float) -> str:
        head = ["process", "launch", "--device", self.udid, "--terminate-existing", "--console", contract.IOS_BUNDLE_ID]
        return self(*head, *arguments, what="devicectl launch of the demo app's benchmark mode", timeout_s=timeout_s)


def launch_arguments(entry_dir: str, cfg: DeviceBenchConfig, result: str) -> list[str]:
    """Parsed by BenchmarkMode.swift (ProcessInfo.processInfo.arguments)."""
    return [
        "--benchmark",
        "--bundle",
        contract.IOS_BUNDLE_DIR,
        "--model",
        entry_dir,
        "--warmup",
        str(cfg.warmup),
        "--iterations",
        str(cfg.iterations),
        "--prompt",
        cfg.prompt,
        "--out",
        result,
    ]


def bench_on_ios(artifact: Path, cfg: DeviceBenchConfig) -> dict:
    from export.bundle.bundle import BundleConfig, build_bundle

    manifest = load_manifest(artifact, verify=True)
    ctl = DeviceCtl(cfg.device.id)
    out_dir = cfg.results_dir(artifact)
    entry_dir = f"{manifest['kind']}-{manifest['backend']}"
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        build_bundle(BundleConfig(target="ios", out=bundle, artifacts=(artifact,), make_zip=False))
        ctl.copy_to(bundle, contract.IOS_BUNDLE_DIR)
    result = f"Documents/{contract.BENCH_RESULT_FILE}"
    ctl.launch(launch_arguments(entry_dir, cfg, result), cfg.timeout_s)
    record = load_record(ctl.copy_from(result, out_dir / "app-bench.json"))
    record["device"] = {**record["device"], "type": "ios", "id": cfg.device.id}
    if "etdump" in record:  # ExecuTorch runs profiled by the app (CoreML runs have none)
        local = ctl.copy_from(record["etdump"], out_dir / "etdump.etdp")
        record.update(etdump=str(local), hotspots=hotspots_from_etdump(local))
    write_record(record, out_dir / contract.BENCH_RESULT_FILE)
    return record
