"""Sets up, once, and runs the emulated aarch64 lane: Debian arm64's Python with PyPI's aarch64
torch/executorch/onnxruntime/numpy wheels (the versions this checkout is locked to), run by qemu-user.

Setup (`python -m export.arm.lane`, or the first `handheld parity DIR --isa aarch64`), cached in
`~/.cache/handheld/aarch64-v1` (HANDHELD_CACHE moves it), built in a temporary folder and renamed
into place when it works:
1. an arm64 userland: `debootstrap --foreign` downloads bookworm's Python 3.11 and the runtime
   libraries (stage 1 only downloads), each .deb is unpacked with `dpkg-deb -x`;
2. the aarch64 wheels, installed with pip's `--platform` (never run on the host);
3. stubs for the CUDA libraries PyPI's aarch64 torch names (export/arm/stubs.py);
4. an ARM /proc/cpuinfo and midr_el1 in the root: qemu passes the host's x86 cpuinfo through,
   and torch's cpuinfo crashes on it (qemu looks paths up under QEMU_LD_PREFIX first);
5. a smoke run: `import torch, executorch` under emulation.
The host tools come from Debian packages (TOOLS); `make arm-lane` installs them.
PYTHONPATH, LD_LIBRARY_PATH and QEMU_* are set for the emulated command only: leaked into the
host's environment they would break the host Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from runtime.errors import HandheldError

LANE_VERSION = 1
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
ROOT_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgomp1", "zlib1g", "libatomic1")
# host command -> the Debian package that has it
TOOLS = {
    "qemu-aarch64-static": "qemu-user-static",
    "debootstrap": "debootstrap",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "dpkg-deb": "dpkg",
    "readelf": "binutils",
}
# wheels with native code (aarch64 builds) and the pure-Python ones torch/executorch import;
# versions are the host's, i.e. the lock file's
NATIVE_WHEELS = ("torch", "executorch", "onnxruntime", "numpy", "pyyaml", "markupsafe")
PURE_WHEELS = (
    "typing_extensions", "filelock", "sympy", "mpmath", "networkx", "jinja2", "fsspec", "packaging",
    "flatbuffers", "ruamel.yaml", "tabulate",
)  # fmt: skip
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
# the phone kernel families, and a qemu CPU model that has each (ARMv8.0 models lack the LSE
# atomics the wheels need, qemu 7.2 has no SME2)
CPUS = {"dotprod": "neoverse-n1", "i8mm": "max,sme=off"}
FAMILIES = tuple(CPUS)
FAKE_CPUINFO = (
    "processor\t: {n}\nBogoMIPS\t: 50.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n"
)
MIDR = "0x00000000413fd0c1\n"  # Neoverse N1 r3p1
WORKER = Path(__file__).with_name("worker.py")


def cache_root() -> Path:
    return Path(os.environ.get("HANDHELD_CACHE", Path.home() / ".cache" / "handheld"))


def lane_dir() -> Path:
    return cache_root() / f"aarch64-v{LANE_VERSION}"


def wheel_pins() -> list[str]:
    """name==version of every wheel, the host's versions without their local tag (the host's
    torch is the +cpu build of the CPU index; on aarch64 PyPI's own build is the CPU build)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in NATIVE_WHEELS + PURE_WHEELS]


def check_tools() -> None:
    missing = [f"{tool} ({pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise HandheldError(
            f"the aarch64 lane needs {', '.join(missing)}, which this machine lacks",
            "run `make arm-lane` (installs the Debian packages with apt-get, as root), then try again",
        )


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise HandheldError(
            f"aarch64 lane setup: {what} failed ({' | '.join(tail) or f'exit {done.returncode}'})",
            "check the network access to the Debian mirror and PyPI and the free disk (about 1.6 GB), then try again",
        )
    return done


@dataclass(frozen=True)
class Lane:
    folder: Path

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def site(self) -> Path:
        return self.folder / "site"

    @property
    def stubs(self) -> Path:
        return self.folder / "stubs"

    def info(self) -> dict:
        return json.loads((self.folder / "lane.json").read_text())

    def env(self, cpu: str) -> dict[str, str]:
        """The emulated command's environment: the host's, minus Python's own settings, plus the lane's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "QEMU_", "VIRTUAL_ENV"))}
        env.update(
            QEMU_LD_PREFIX=str(self.root),
            QEMU_CPU=CPUS[cpu],
            PYTHONPATH=str(self.site),
            PYTHONNOUSERSITE="1",
            LD_LIBRARY_PATH=str(self.stubs),
            OMP_NUM_THREADS="1",
        )
        return env

    def python(self, args: list[str], cpu: str, timeout: float) -> subprocess.CompletedProcess:
        cmd = ["qemu-aarch64-static", str(self.root / "usr/bin/python3.11"), *args]
        return subprocess.run(cmd, env=self.env(cpu), capture_output=True, text=True, timeout=timeout)


def _userland(root: Path) -> None:
    if os.geteuid() != 0:
        raise HandheldError(
            "aarch64 lane setup: debootstrap needs root to download the arm64 userland",
            "run `make arm-lane` once as root (or with sudo); later runs reuse the cached lane",
        )
    _run(
        ["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}",
         SUITE, str(root), MIRROR],
        "debootstrap (arm64 userland)",
    )  # fmt: skip
    archives = root / "var/cache/apt/archives"
    for deb in sorted(archives.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpacking {deb.name}")
        deb.unlink()
    cpu = root / "sys/devices/system/cpu"
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/cpuinfo").write_text("".join(FAKE_CPUINFO.format(n=n) for n in range(2)))
    for n in range(2):
        ident = cpu / f"cpu{n}/regs/identification"
        ident.mkdir(parents=True, exist_ok=True)
        (ident / "midr_el1").write_text(MIDR)


def _wheels(site: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    _run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target", str(site),
         *platforms, "--python-version", "3.11", "--only-binary=:all:", *wheel_pins()],
        "pip install (aarch64 wheels)",
    )  # fmt: skip


def _stubs(lane: Lane) -> list[str]:
    from export.arm.stubs import STUBBED, build_stub, missing_libraries

    libraries = [p for p in (lane.site / "torch/lib").glob("*.so*") if p.is_file()]
    libraries += list((lane.site / "executorch").rglob("*.so"))
    system = [lane.root / d for d in ("lib", "usr/lib", "lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")]
    available = {p.name for d in system if d.is_dir() for p in d.iterdir()}
    available |= {p.name for p in lane.site.rglob("*.so*")}
    needed = missing_libraries(libraries, available)
    other = sorted(name for name in needed if not name.startswith(STUBBED))
    if other:
        raise HandheldError(
            f"aarch64 lane setup: the arm64 root lacks {', '.join(other)}",
            "add their Debian packages to export/arm/lane.py ROOT_PACKAGES",
        )
    return [build_stub(name, nodes, lane.stubs).name for name, nodes in sorted(needed.items())]


def setup(progress: bool = True) -> Lane:
    """The cached lane, built first if it is missing or was built for other wheel versions."""
    final = Lane(lane_dir())
    pins = wheel_pins()
    if (final.folder / "lane.json").is_file() and final.info().get("wheels") == pins:
        return final
    check_tools()
    final.folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".aarch64-", dir=final.folder.parent))
    lane = Lane(work)
    say = print if progress else (lambda *a, **k: None)
    times = {}
    try:
        for name, step in (
            ("userland", lambda: _userland(lane.root)),
            ("wheels", lambda: _wheels(lane.site)),
            ("stubs", lambda: _stubs(lane)),
        ):
            say(f"aarch64 lane: {name} ...", flush=True)
            start = time.perf_counter()
            result = step()
            times[f"{name}_s"] = round(time.perf_counter() - start, 1)
            if name == "stubs":
                stubs = result
        start = time.perf_counter()
        smoke = lane.python(
            ["-c", "import torch, executorch.runtime, onnxruntime; print(torch.__version__)"], "dotprod", 600
        )
        if smoke.returncode != 0:
            raise HandheldError(
                f"aarch64 lane setup: torch does not import under emulation ({_last_line(smoke)})",
                "remove the half-built lane and try again; report the error if it persists",
            )
        times["smoke_import_s"] = round(time.perf_counter() - start, 1)
        info = {"wheels": pins, "suite": SUITE, "stubs": stubs, "setup": times, "torch": smoke.stdout.strip()}
        (work / "lane.json").write_text(json.dumps(info, indent=1) + "\n")
        if final.folder.exists():
            shutil.rmtree(final.folder)  # an earlier lane of other wheel versions: Handheld's own cache
        work.rename(final.folder)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    say(f"aarch64 lane ready in {final.folder} ({', '.join(f'{k} {v}' for k, v in times.items())})")
    return final


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {done.returncode}"


def run_program(
    lane: Lane, program: Path, method: str, cases: list[list], cpu: str, timeout: float = 1800, **job: object
) -> tuple:
    """Run `cases` (lists of numpy inputs) in order on one loaded `method` of `program` under
    emulation -> ([[outputs] per case], the worker's result.json). `job`: what an .onnx program
    needs besides (input_names, output_names; state pairs and kv_shape for a decoder's cache)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="handheld-aarch64-") as tmp:
        folder = Path(tmp)
        np.savez(folder / "inputs.npz", **{f"{i}/{j}": a for i, case in enumerate(cases) for j, a in enumerate(case)})
        spec = {"program": str(Path(program).resolve()), "method": method, "cases": len(cases)}
        spec["inputs_per_case"] = [len(c) for c in cases]
        spec.update(job)
        (folder / "job.json").write_text(json.dumps(spec))
        try:
            done = lane.python([str(WORKER), str(folder)], cpu, timeout)
        except subprocess.TimeoutExpired as e:
            raise HandheldError(
                f"the emulated aarch64 run of {program.name} did not finish in {timeout:.0f} s",
                "try a shorter protocol; the host parity result is unchanged",
            ) from e
        if done.returncode != 0 or not (folder / "result.json").is_file():
            raise HandheldError(
                f"the emulated aarch64 run of {program.name} failed: {_last_line(done)}",
                "the aarch64 runtime may lack an operator this program uses; the host parity result is unchanged",
            )
        with np.load(folder / "outputs.npz") as z:
            outputs = [
                [z[f"{i}/{k}"] for k in range(sum(key.startswith(f"{i}/") for key in z.files))]
                for i in range(len(cases))
            ]
        return outputs, json.loads((folder / "result.json").read_text())


if __name__ == "__main__":
    try:
        print(json.dumps(setup().info(), indent=1))
    except HandheldError as err:
        sys.exit(f"handheld: error: {err}")
