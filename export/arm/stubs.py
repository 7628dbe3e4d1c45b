"""Stub CUDA libraries so PyPI's aarch64 torch (a CUDA build) loads on a CPU-only emulated ARM.

`libtorch_cpu.so` and friends name libcudart.so.13, libcublas.so.13, ... as NEEDED libraries
and bind some of their functions to version nodes (`cudaMalloc@libcudart.so.13`). The dynamic
linker refuses a library that lacks a required version node, so each stub carries the SONAME,
the version nodes the torch libraries ask of it and every function they import from it; each
function returns 100 (cudaErrorNoDevice / CUDA_ERROR_NO_DEVICE: "no CUDA here"). torch then
loads with `torch.cuda.is_available() == False`, as on a phone.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

CROSS_CC = "aarch64-linux-gnu-gcc"
STUB_RETURN = 100  # cudaErrorNoDevice, CUDA_ERROR_NO_DEVICE
STUBBED = ("libcu", "libnv", "libnccl")  # what may be stubbed: NVIDIA's libraries, nothing else
# functions imported without a version node: the library is known by the name's prefix
UNVERSIONED = (
    ("cusparseLt", "libcusparseLt.so"),
    ("cuFile", "libcufile.so"),
    ("curand", "libcurand.so"),
    ("nccl", "libnccl.so"),
    ("nvshmem", "libnvshmem_host.so"),
    ("cu", "libcuda.so"),
)


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def missing_libraries(libraries: list[Path], available: set[str]) -> dict[str, dict[str, set[str]]]:
    """The NEEDED libraries of `libraries` that `available` (names present in the emulated root
    and the wheels) lacks -> {soname: {version node: {function imported at that node}}}."""
    needed: dict[str, dict[str, set[str]]] = {}
    for so in libraries:
        wants = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _readelf("-d", str(so)))) - available
        if not wants:
            continue
        node_file, current = {}, None
        for line in _readelf("-V", str(so)).split("Version needs", 1)[-1].splitlines():
            if m := re.search(r"File: (\S+)", line):
                current = m.group(1)
            elif (m := re.search(r"Name: (\S+)", line)) and current in wants:
                node_file[m.group(1)] = current
        for name in wants:
            needed.setdefault(name, {})
        for line in _readelf("--dyn-syms", str(so)).splitlines():
            parts = line.split()
            if len(parts) < 8 or parts[6] != "UND":
                continue
            symbol, _, node = parts[7].partition("@")
            node = node.lstrip("@")
            if node in node_file:
                needed[node_file[node]].setdefault(node, set()).add(symbol)
            elif not node:
                lib = next((lib for prefix, lib in UNVERSIONED if symbol.startswith(prefix)), None)
                owner = next((w for w in wants if lib and w.startswith(lib)), None)
                if owner:
                    needed[owner].setdefault("", set()).add(symbol)
    return needed


def build_stub(soname: str, nodes: dict[str, set[str]], out_dir: Path) -> Path:
    """Compile one stub library `out_dir/soname` with the cross compiler."""
    out_dir.mkdir(parents=True, exist_ok=True)
    functions = sorted(set().union(*nodes.values())) if nodes else []
    src = out_dir / f"{soname}.c"
    src.write_text("".join(f"int {f}(void) {{ return {STUB_RETURN}; }}\n" for f in functions) or "int handheld_stub;\n")
    script = out_dir / f"{soname}.map"
    versions = [v for v in nodes if v]
    script.write_text(
        "".join(f"{v} {{ global: {' '.join(f + ';' for f in sorted(nodes[v]))} }};\n" for v in versions)
        or "{ global: *; };\n"
    )
    target = out_dir / soname
    subprocess.run(
        [
            CROSS_CC,
            "-shared",
            "-fPIC",
            "-o",
            str(target),
            str(src),
            f"-Wl,-soname,{soname}",
            f"-Wl,--version-script,{script}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    src.unlink()
    script.unlink()
    return target
