"""Android benchmarks over adb.

Two ways to run, chosen by DeviceBenchConfig.runner:
- runner binary (executor_runner for SqueezeSAM, llama_main for the LLM, both built from
  ExecuTorch with the Android NDK): the artifact and the binary are pushed to
  /data/local/tmp, each run is one process (`warmup` discarded, `iterations` measured, per
  thread count) and timings are parsed from what the runner prints. One more executor_runner
  run, not measured (the event tracer costs time), writes an ETDump that is pulled and
  summarised into hot spots; a runner built without the event tracer just yields none.
- the demo app (android_demo/, installed): a one-artifact bundle is pushed to the app's
  files folder and BenchmarkActivity is started; it writes a bench.schema.json record that
  is pulled back. The AAR's Java API sets no thread count, so the app runs once with
  ExecuTorch's default pool and its metrics carry no `threads`.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from pathlib import Path, PurePosixPath

from export.bundle import contract
from export.device import DeviceBenchConfig
from export.device.results import (
    envelope,
    hotspots_from_etdump,
    load_record,
    metric,
    parse_llm_observer,
    parse_runner_ms,
    write_record,
)
from export.device.shell import find_tool, run_tool
from runtime.errors import HandheldError
from runtime.manifest import load_manifest

REMOTE_ROOT = "/data/local/tmp/handheld"
ETDUMP = "etdump.etdp"
ADB_FIX = "install Android platform-tools, enable USB debugging, and check `adb devices`"


class Adb:
    def __init__(self, serial: str):
        self.serial = serial
        self.binary = find_tool("adb", ADB_FIX)

    def __call__(self, *args: str, what: str = "", timeout_s: float = 600.0) -> str:
        argv = [self.binary, "-s", self.serial, *args]
        return run_tool(argv, what or f"adb {' '.join(args[:2])}", timeout_s)

    def shell(self, command: str, timeout_s: float = 600.0) -> str:
        return self(*["shell", command], what=f"adb shell {command.split()[0]}", timeout_s=timeout_s)

    def push(self, local: Path, remote: str) -> None:
        self("push", str(local), remote, what=f"adb push {Path(local).name}")

    def pull(self, remote: str, local: Path) -> Path:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self("pull", remote, str(local), what=f"adb pull {remote}")
        return Path(local)

    def device_info(self) -> dict:
        state = self("get-state", what="adb get-state").strip()
        if state != "device":
            raise HandheldError(f"Android device {self.serial} is {state!r}, not ready", ADB_FIX)
        prop = lambda key: self.shell(f"getprop {key}").strip()  # noqa: E731
        return {
            "type": "android",
            "id": self.serial,
            "name": prop("ro.product.model"),
            "os": f"Android {prop('ro.build.version.release')}",
            "abi": prop("ro.product.cpu.abi"),
        }


def bench_on_adb(artifact: Path, cfg: DeviceBenchConfig) -> dict:
    manifest = load_manifest(artifact, verify=True)
    adb = Adb(cfg.device.id)
    device = adb.device_info()
    run = _run_binary if cfg.runner else _run_app
    record = run(adb, artifact, manifest, device, cfg)
    return record


# --- ExecuTorch runner binaries --------------------------------------------------------
def _push_artifact(adb: Adb, artifact: Path, manifest: dict, cfg: DeviceBenchConfig) -> str:
    from export.bundle.bundle import app_files

    remote = f"{REMOTE_ROOT}/{artifact.resolve().name}"
    adb.shell(f"mkdir -p {shlex.quote(remote)}")
    for rel in app_files(manifest):  # what a phone loads: no fp32 variants or bench baselines
        parent = PurePosixPath(remote, rel).parent
        if str(parent) != remote:
            adb.shell(f"mkdir -p {shlex.quote(str(parent))}")
        adb.push(artifact / rel, f"{remote}/{rel}")
    adb.push(cfg.runner, f"{remote}/{cfg.runner.name}")
    adb.shell(f"chmod 755 {shlex.quote(remote + '/' + cfg.runner.name)}")
    return remote


def llm_command(remote: str, manifest: dict, cfg: DeviceBenchConfig, threads: int) -> str:
    """llama_main flags (examples/models/llama/main.cpp); greedy so runs are comparable."""
    args = [
        f"./{cfg.runner.name}",
        f"--model_path={manifest['model_file']}",
        f"--tokenizer_path={manifest['tokenizer']['file']}",
        f"--prompt={cfg.prompt}",
        f"--seq_len={min(cfg.seq_len, manifest['max_seq_len'])}",
        f"--cpu_threads={threads}",
        "--temperature=0",
    ]
    return f"cd {shlex.quote(remote)} && " + " ".join(shlex.quote(a) for a in args)


def model_command(remote: str, manifest: dict, cfg: DeviceBenchConfig, threads: int, etdump: bool) -> str:
    """executor_runner flags (examples/portable/executor_runner); inputs default to ones."""
    args = [
        f"./{cfg.runner.name}",
        f"--model_path={manifest['model_file']}",
        "--num_executions=1",
        f"--cpu_threads={threads}",
    ]
    if etdump:
        args.append(f"--etdump_path={ETDUMP}")
    return f"cd {shlex.quote(remote)} && " + " ".join(shlex.quote(a) for a in args)


def _run_binary(adb: Adb, artifact: Path, manifest: dict, device: dict, cfg: DeviceBenchConfig) -> dict:
    kind = manifest["kind"]
    if manifest["backend"] != "executorch":
        raise HandheldError(
            f"{artifact} is a {manifest['backend']} artifact; ExecuTorch's runners need a .pte",
            "export with --backend executorch",
        )
    if kind == "longvu":
        raise HandheldError(
            "LongVU is several methods plus host-side selection; executor_runner cannot drive it",
            "omit --runner to use the demo app's benchmark mode",
        )
    remote = _push_artifact(adb, artifact, manifest, cfg)
    out_dir = cfg.results_dir(artifact)
    metrics = []
    for threads in cfg.threads:
        samples: dict[str, list[float]] = {}
        for i in range(cfg.warmup + cfg.iterations):
            if kind == "llm":
                values = parse_llm_observer(adb.shell(llm_command(remote, manifest, cfg, threads)))
            else:
                values = {
                    "forward_ms": parse_runner_ms(
                        adb.shell(model_command(remote, manifest, cfg, threads, etdump=False))
                    )
                }
            if i >= cfg.warmup:
                for name, value in values.items():
                    samples.setdefault(name, []).append(value)
        metrics += [metric(name, values, threads=threads) for name, values in samples.items()]
    extra = _profile(adb, remote, manifest, cfg, out_dir) if kind != "llm" else {}
    record = envelope(
        manifest, artifact, device, "executorch-runner", metrics, warmup=cfg.warmup, iterations=cfg.iterations, **extra
    )
    write_record(record, out_dir / contract.BENCH_RESULT_FILE)
    return record


def _profile(adb: Adb, remote: str, manifest: dict, cfg: DeviceBenchConfig, out_dir: Path) -> dict:
    """One extra traced run -> ETDump -> hot spots; {} when the runner has no event tracer."""
    try:
        adb.shell(model_command(remote, manifest, cfg, cfg.threads[-1], etdump=True))
        local = adb.pull(f"{remote}/{ETDUMP}", out_dir / ETDUMP)
    except HandheldError as err:
        print(
            f"note: no ETDump profile ({err.problem}); build executor_runner with -DEXECUTORCH_ENABLE_EVENT_TRACER=ON for one"
        )
        return {}
    return {"etdump": str(local), "hotspots": hotspots_from_etdump(local)}


# --- the demo app's benchmark mode -----------------------------------------------------
def app_command(entry_dir: str, cfg: DeviceBenchConfig, result: str) -> str:
    """Start BenchmarkActivity and wait for it (-W); extras match BenchmarkActivity.kt."""
    component = f"{contract.ANDROID_PACKAGE}/{contract.ANDROID_BENCH_ACTIVITY}"
    extras = [
        ("--es", "bundle", contract.ANDROID_BUNDLE_DIR),
        ("--es", "model", entry_dir),
        ("--ei", "warmup", str(cfg.warmup)),
        ("--ei", "iterations", str(cfg.iterations)),
        ("--es", "prompt", cfg.prompt),
        ("--es", "out", result),
    ]
    flat = " ".join(f"{flag} {key} {shlex.quote(value)}" for flag, key, value in extras)
    return f"am start -W -S -n {component} {flat}"


def _wait_for(adb: Adb, remote: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if adb.shell(f"ls {shlex.quote(remote)} 2>/dev/null || true").strip() == remote:
            return
        time.sleep(1.0)
    raise HandheldError(
        f"the demo app wrote no {remote} within {timeout_s:.0f} s",
        "open the app on the phone to see its error, or check `adb logcat -s HandheldBench`",
    )


def _run_app(adb: Adb, artifact: Path, manifest: dict, device: dict, cfg: DeviceBenchConfig) -> dict:
    from export.bundle.bundle import BundleConfig, build_bundle

    out_dir = cfg.results_dir(artifact)
    entry_dir = f"{manifest['kind']}-{manifest['backend']}"
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        build_bundle(BundleConfig(target="android", out=bundle, artifacts=(artifact,), make_zip=False))
        # the bundle folder must not exist yet, or `adb push` nests the pushed folder inside it
        adb.shell(f"rm -rf {contract.ANDROID_BUNDLE_DIR} && mkdir -p {contract.ANDROID_FILES_DIR}")
        adb.push(bundle, contract.ANDROID_BUNDLE_DIR)
    result = f"{contract.ANDROID_FILES_DIR}/{contract.BENCH_RESULT_FILE}"
    adb.shell(f"rm -f {shlex.quote(result)}")
    adb.shell(app_command(entry_dir, cfg, result), timeout_s=cfg.timeout_s)
    _wait_for(adb, result, cfg.timeout_s)
    record = load_record(adb.pull(result, out_dir / "app-bench.json"))
    record["device"] = {**record["device"], **device}  # the host's view of the device wins
    if "etdump" in record:  # an app build that profiles reports its ETDump path on the phone
        local = adb.pull(record["etdump"], out_dir / ETDUMP)
        record.update(etdump=str(local), hotspots=hotspots_from_etdump(local))
    write_record(record, out_dir / contract.BENCH_RESULT_FILE)
    return record
