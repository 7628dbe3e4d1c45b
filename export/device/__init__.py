"""On-device benchmarking: `handheld bench DIR --device host|adb:SERIAL|ios:UDID`.

- adb.py:     Android over adb: ExecuTorch's runner binaries, or the demo app's benchmark mode
- ios.py:     iOS over `xcrun devicectl`: the demo app's benchmark mode
- results.py: the one benchmark record shape for host and devices, runner output parsing, ETDump
- shell.py:   running the device tools with clear errors

The host path stays in export/harness.py's BENCH registry; this package handles the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.errors import HandheldError
from runtime.registry import Registry

# device scheme -> "module:function(artifact: Path, cfg: DeviceBenchConfig) -> record"
DEVICES = Registry[str]("device type")
DEVICES.register("adb")("export.device.adb:bench_on_adb")
DEVICES.register("ios")("export.device.ios:bench_on_ios")


@dataclass(frozen=True)
class DeviceSpec:
    scheme: str  # "host" | "adb" | "ios"
    id: str = ""  # adb serial or iOS UDID

    @classmethod
    def parse(cls, text: str) -> DeviceSpec:
        scheme, _, ident = text.partition(":")
        if scheme == "host" and not ident:
            return cls("host")
        if scheme in DEVICES and ident:
            return cls(scheme, ident)
        raise HandheldError(
            f"unknown device {text!r}",
            "use host, adb:SERIAL (see `adb devices`) or ios:UDID (see `xcrun devicectl list devices`)",
        )

    @property
    def is_host(self) -> bool:
        return self.scheme == "host"


@dataclass(frozen=True)
class DeviceBenchConfig:
    device: DeviceSpec
    threads: tuple[int, ...]  # CPU threads per run (the CLI's --threads, shared with the host bench)
    iterations: int  # measured runs per thread count, median reported (the CLI's --runs)
    warmup: int = 2  # discarded runs before measuring (XNNPACK packs weights, caches fill)
    runner: Path | None = None  # ExecuTorch runner binary to push (executor_runner / llama_main); None = the demo app
    prompt: str = "Explain in two sentences why the sky is blue."  # LLM runs
    seq_len: int = 192  # LLM runs: prompt + generated tokens
    out_dir: Path | None = None  # where results and ETDumps land; None = DIR/device-<scheme>-<id>/
    timeout_s: float = 900.0  # per app benchmark run

    def __post_init__(self):
        object.__setattr__(self, "threads", tuple(int(t) for t in self.threads))
        if self.device.is_host:
            raise HandheldError(
                "DeviceBenchConfig is for phones", "the host benchmark runs through `handheld bench DIR`"
            )
        if self.warmup < 0 or self.iterations < 1 or any(t < 1 for t in self.threads):
            raise HandheldError(
                f"warmup={self.warmup}, iterations={self.iterations}, threads={self.threads}",
                "use warmup >= 0, iterations >= 1, threads >= 1",
            )
        if self.runner is not None:
            object.__setattr__(self, "runner", Path(self.runner))
            if not self.runner.is_file():
                raise HandheldError(
                    f"runner binary {self.runner} does not exist",
                    "build ExecuTorch's executor_runner / llama_main for Android (see android_demo/README.md)",
                )

    def results_dir(self, artifact: Path) -> Path:
        return Path(self.out_dir) if self.out_dir else Path(artifact) / f"device-{self.device.scheme}-{self.device.id}"


def run_device_bench(artifact: Path, cfg: DeviceBenchConfig) -> dict:
    """Benchmark `artifact` on a phone; returns a record that follows bench.schema.json."""
    from export.harness import resolve

    return resolve(DEVICES.get(cfg.device.scheme))(Path(artifact), cfg)
