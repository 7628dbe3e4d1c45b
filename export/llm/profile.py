"""Where an ExecuTorch LLM step spends its time: ETDump per-op profiles of prefill, an early
decode step and a late one, with the bytes each decode step must read and the share of the
machine's memory bandwidth that makes.

`handheld bench DIR --profile [--baseline PTE]`: every program is loaded with ExecuTorch's
event tracer (ETDump) in its own process, and each phase is a fresh load running `STEPS` calls:
a PROMPT_TOKENS-token prefill at position 0, a decode step at PROMPT_TOKENS, and one near the end
of the context (timing does not depend on what the cache holds). ExecuTorch records every
operator outside a delegate and, inside XNNPACK, every XNNPACK operator; the devtools Inspector
reads them back. Profiling adds its own cost per event, so the step times here are for shares,
not for speed (that is `handheld bench` without --profile).

Bytes a decode step reads: every weight but the embedding table (one row of it) and the KV
cache up to the step's position, both directions of attention (keys and values). Dividing by
the step time gives the achieved bandwidth; `copy_bandwidth_gb_s` is what a large memcpy reaches
on this machine, the ceiling a memory-bound step approaches.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

PROMPT_TOKENS, STEPS, TOP = 64, 5, 12
CONTAINERS = ("Method::execute", "DELEGATE_CALL", "OPERATOR_CALL")  # events that hold other events
# The online R4 Hadamard (12 x 128 Kronecker before down_proj): the 128-point factor is
# ExecuTorch's llama::fast_hadamard_transform (before: XNNPACK's fp32 fully connected layer), the
# 12-point one an XNNPACK fp32 batch matmul. They are the only fp32 matmuls of a Handheld decoder
# (linears are 4/8-bit, attention is llama::custom_sdpa); R3 (int8 KV only) adds its own.
R4_OPS = (
    "llama::fast_hadamard_transform.out",
    "Fully Connected (NC, F32) GEMM",
    "Batch Matrix Multiply (NC, F32) GEMM",
)


def _op_name(event_name: str) -> str:
    """XNNPACK numbers repeated operator kinds ("... GEMM #2"); ExecuTorch kernels carry
    native_call_ and .out: one name per kind."""
    name = re.sub(r" #\d+$", "", event_name)
    return re.sub(r"^native_call_", "", name)


def profile_phase(pte: str, threads: int, tokens: int, pos: int, steps: int = STEPS) -> dict:
    """One fresh load with ETDump, `steps` calls of `tokens` tokens at `pos`: ms per call of the
    whole step and of each operator kind, outside and inside XNNPACK."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401
    import torch
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from runtime.executorch_runner import native_stderr_silenced, set_threads

    set_threads(threads)
    with native_stderr_silenced():
        module = _load_for_executorch(pte, enable_etdump=True, debug_buffer_size=0)
        ids = torch.arange(100, 100 + tokens, dtype=torch.long).reshape(1, -1)
        for _ in range(steps):
            module.forward([ids, torch.tensor([pos], dtype=torch.long)])
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "etdump.etdp")
        module.write_etdump_result_to_file(path)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Output Buffer not found": no tensor debug data asked for
            inspector = Inspector(etdump_path=path)
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    xnnpack_ops = 0.0  # the XNNPACK operators themselves (the rest of the delegate calls is overhead)
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is None:
                continue
            raw = event.perf_data.raw[-steps:]
            name = event.name if event.name in CONTAINERS else _op_name(event.name)
            totals[name] += sum(raw) / len(raw)
            calls[name] += 1
            if event.is_delegated_op:
                xnnpack_ops += sum(raw) / len(raw)
    step_ms = totals.pop("Method::execute", 0.0)
    outside, inside = totals.pop("OPERATOR_CALL", 0.0), totals.pop("DELEGATE_CALL", 0.0)
    ops = sorted(totals.items(), key=lambda kv: -kv[1])
    return {
        "tokens": tokens,
        "position": pos,
        "step_ms": step_ms,
        "xnnpack_ms": inside,
        "xnnpack_ops_ms": xnnpack_ops,  # inside - this: delegate calls' own cost (setup, reshapes, copies)
        "outside_delegates_ms": outside,
        "ops": [
            {"op": name, "calls": calls[name], "ms": ms, "share": ms / step_ms if step_ms else 0.0} for name, ms in ops
        ],
        "r4_hadamard_share": sum(ms for name, ms in ops if name in R4_OPS) / step_ms if step_ms else 0.0,
    }


def decode_bytes(pte_bytes: int, arch: dict, pos: int, kv_bytes_per_value: float) -> dict:
    """Bytes one decode step at `pos` reads: the weights (the program less all but one row of
    the int8 embedding table) and the keys and values of `pos` positions in every layer."""
    embedding = arch["vocab_size"] * arch["dim"]  # int8 table (+ scales, ignored)
    weights = pte_bytes - embedding + arch["dim"]
    kv = 2 * arch["n_layers"] * pos * arch["n_kv_heads"] * arch["head_dim"] * kv_bytes_per_value
    return {"weights": weights, "kv_cache": kv, "total": weights + kv}


def copy_bandwidth_gb_s(mb: int = 256, repeats: int = 5) -> float:
    """The best of `repeats` memcpys of `mb` MB (read + write counted), GB/s."""
    import numpy as np

    src = np.ones(mb * 2**20, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def profile_program(pte: str, threads: int, max_seq_len: int) -> dict:
    """Worker: prefill, early decode and late decode of one program."""
    prompt = min(PROMPT_TOKENS, max_seq_len // 2)  # a short context takes a shorter prompt
    return {
        "prefill": profile_phase(pte, threads, prompt, 0),
        "decode": profile_phase(pte, threads, 1, prompt),
        "late_decode": profile_phase(pte, threads, 1, max_seq_len - 1 - STEPS),
    }


def _kv_bytes_per_value(manifest: dict | None) -> float:
    """fp32 cache: 4 bytes; int8: 1 byte plus an fp32 scale and an int8 zero point per head_dim values."""
    if manifest and (manifest.get("kv_cache") or {}).get("dtype") == "int8":
        return 1 + 5 / manifest["architecture"]["head_dim"]
    return 4.0


def profile_llm(folder: Path, baseline: Path | None, threads: tuple[int, ...]) -> dict:
    """`handheld bench DIR --profile`: the artifact (and the baseline .pte) at each thread count."""
    from export.worker import run_worker
    from runtime.manifest import load_manifest

    manifest = load_manifest(folder)
    arch, n = manifest["architecture"], int(manifest["max_seq_len"])
    programs = {"handheld": (folder / manifest["model_file"], manifest)}
    if baseline is not None and baseline.is_dir():  # another Handheld artifact
        other = load_manifest(baseline)
        programs["baseline"] = (baseline / other["model_file"], other)
    elif baseline is not None:
        programs["baseline"] = (baseline, None)  # export_llm's program, same checkpoint and context
    bandwidth = copy_bandwidth_gb_s()
    report = {"max_seq_len": n, "copy_bandwidth_gb_s": bandwidth, "programs": {}}
    for name, (pte, own) in programs.items():
        per_threads = {}
        for t in threads:
            phases = run_worker(
                "export.llm.profile:profile_program",
                Path(pte),
                t,
                n,
                what=f"the {name} program's profile at {t} thread(s)",
                fix="check that the program loads with `handheld bench` first",
            )
            rotated = own is not None and own["config"].get("rotation", "none") != "none"
            for p in phases.values():
                p["r4_hadamard_share"] = p["r4_hadamard_share"] if rotated else None  # no online Hadamard
            for phase in ("decode", "late_decode"):
                p = phases[phase]
                read = decode_bytes(Path(pte).stat().st_size, arch, p["position"], _kv_bytes_per_value(own))
                achieved = read["total"] / (p["step_ms"] / 1000) / 1e9
                p.update(bytes_read=read, achieved_gb_s=achieved, bandwidth_share=achieved / bandwidth)
            per_threads[str(t)] = phases
        report["programs"][name] = {"file": str(pte), "threads": per_threads}
    print_profile(report)
    return report


def print_profile(report: dict) -> None:
    print(f"copy bandwidth on this machine: {report['copy_bandwidth_gb_s']:.1f} GB/s (best memcpy, read + write)")
    for name, prog in report["programs"].items():
        for t, phases in prog["threads"].items():
            for phase, p in phases.items():
                head = (
                    f"{name}, {t} thread(s), {phase} ({p['tokens']} token(s) at position {p['position']}): "
                    f"{p['step_ms']:.2f} ms per step with profiling, {p['xnnpack_ms'] / p['step_ms']:.0%} in XNNPACK "
                    f"({p['xnnpack_ops_ms'] / p['step_ms']:.0%} its operators, the rest per-call overhead), "
                    f"{p['outside_delegates_ms'] / p['step_ms']:.0%} in ExecuTorch kernels"
                )
                if p["r4_hadamard_share"] is not None:
                    head += f", R4 Hadamard {p['r4_hadamard_share']:.1%}"
                if "bytes_read" in p:
                    head += (
                        f"; reads {p['bytes_read']['total'] / 2**20:.1f} MiB "
                        f"(KV {p['bytes_read']['kv_cache'] / 2**20:.1f}), {p['achieved_gb_s']:.1f} GB/s = "
                        f"{p['bandwidth_share']:.0%} of copy bandwidth"
                    )
                print(head)
                for op in p["ops"][:TOP]:
                    print(f"    {op['share']:6.1%} {op['ms']:8.3f} ms {op['calls']:5d} calls  {op['op']}")
