"""`handheld` command line. argparse lives in this package only: each command builds a
config object and calls one typed library function.

Model families contribute commands through the modules in FAMILY_CLIS, each exposing
`add_export_parser(export_subparsers)` (for `handheld export NAME`) and
`add_commands(subparsers)` (for their own top-level verbs).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from export.cli.args import (
    HandheldParser,
    add_force,
    arm_kernel_families,
    artifact_dir,
    existing_path,
    int_range,
    thread_counts,
)
from runtime.errors import HandheldError, error_line

FAMILY_CLIS = ["export.cli.llm", "export.cli.bundle", "export.cli.longvu", "export.cli.sam", "export.cli.llm_eval"]


def _families():
    return [importlib.import_module(name) for name in FAMILY_CLIS]


def build_parser() -> argparse.ArgumentParser:
    parser = HandheldParser(
        prog="handheld",
        description="Export research models to phones and prove they still work there.",
        epilog="--verbose (anywhere on the line) shows the libraries' own warnings and log lines",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="export a model family to a phone backend")
    export_sub = export.add_subparsers(dest="family", required=True)
    ev = sub.add_parser("eval", help="measure a model family's quality on held-out data")
    eval_sub = ev.add_subparsers(dest="family", required=True)
    for family in _families():
        family.add_export_parser(export_sub)
        if hasattr(family, "add_eval_parser"):
            family.add_eval_parser(eval_sub)
        family.add_commands(sub)

    p = sub.add_parser("parity", help="check an artifact against its eager model; non-zero exit on failure")
    p.add_argument("artifact", type=artifact_dir)
    p.add_argument("--json", type=Path, help="also write the parity report here")
    add_force(p, "--json file")
    p.add_argument(
        "--isa",
        choices=("host", "aarch64"),
        default="host",
        help="aarch64: run the ExecuTorch program on ARM's kernels under qemu-user (set up once; `make arm-lane`)",
    )
    p.add_argument(
        "--arm-kernels",
        type=arm_kernel_families,
        help="with --isa aarch64: kernel families to emulate, comma-separated (default dotprod,i8mm)",
    )
    p.set_defaults(func=cmd_parity)

    b = sub.add_parser("bench", help="measure an artifact's speed, memory and size")
    b.add_argument("artifact", type=artifact_dir)
    b.add_argument("--json", type=Path, help="write the results here (default: DIR/bench.json, replaced on every run)")
    add_force(b, "--json file")
    b.add_argument(
        "--baseline",
        type=existing_path("baseline"),
        help="a comparable artifact to measure in the same run (e.g. ExecuTorch's export_llm .pte)",
    )
    b.add_argument(
        "--threads", type=thread_counts, default=(1, 2), help="comma-separated XNNPACK thread counts (default 1,2)"
    )
    b.add_argument("--runs", type=int_range(1, 1000), default=3, help="measured runs per setting (median reported)")
    b.add_argument(
        "--profile",
        action="store_true",
        help="ExecuTorch LLM: per-op ETDump profile of prefill, early and late decode, bytes per token, bandwidth share",
    )
    b.add_argument("--device", default="host", help="host (default), adb:SERIAL or ios:UDID")
    b.add_argument(
        "--runner",
        type=existing_path("runner binary", folder=False),
        help="phones: ExecuTorch runner binary to push (executor_runner, llama_main); default: the demo app",
    )
    b.add_argument("--warmup", type=int_range(0, 1000), help="phones: discarded runs before the measured ones")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="the main job on the embedded defaults: export, check, run every model")
    d.add_argument(
        "--out",
        type=Path,
        default=Path("artifacts"),
        help="folder for every demo artifact (re-runs replace only what the demo wrote)",
    )
    d.set_defaults(func=cmd_demo)
    return parser


def _kind(artifact: Path) -> str:
    from runtime.manifest import load_manifest

    return load_manifest(artifact, verify=False)["kind"]


def _json_out(path: Path | None, force: bool) -> Path | None:
    from export.outputs import check_output

    return None if path is None else check_output(path, folder=False, force=force, flag="--json", suffixes=(".json",))


def cmd_parity(args) -> int:
    from export.harness import PARITY, resolve
    from export.outputs import write_text_atomic

    out = _json_out(args.json, args.force)
    if args.isa == "aarch64":
        from export.arm.parity import FAMILIES, check_aarch64

        report = check_aarch64(args.artifact, args.arm_kernels or FAMILIES)
    elif args.arm_kernels is not None:
        raise HandheldError(
            "--arm-kernels applies to --isa aarch64 only", "add --isa aarch64, or leave --arm-kernels out"
        )
    else:
        report = resolve(PARITY.get(_kind(args.artifact)))(args.artifact)
    if out:
        write_text_atomic(out, json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return 0 if report["passed"] else 1


def cmd_bench(args) -> int:
    from export.device import DeviceSpec
    from export.device.results import host_record
    from export.harness import BENCH, resolve
    from export.outputs import write_text_atomic

    device = DeviceSpec.parse(args.device)
    out = _json_out(args.json, args.force)
    if not device.is_host and args.profile:
        raise HandheldError(
            "--profile runs on this machine only", "leave --device out, or run the phone bench without --profile"
        )
    if not device.is_host:
        from export.cli.bundle import cmd_device_bench

        return cmd_device_bench(args, device, out)
    if args.runner is not None or args.warmup is not None:
        raise HandheldError(
            "--runner and --warmup apply to phones only", "add --device adb:SERIAL or ios:UDID, or leave them out"
        )
    kind = _kind(args.artifact)
    if args.baseline is not None:
        _check_baseline(kind, args.baseline)
    if args.profile:
        return _profile(args, kind, out)
    result = resolve(BENCH.get(kind))(args.artifact, baseline=args.baseline, threads=args.threads, runs=args.runs)
    out = out or args.artifact / "bench.json"
    write_text_atomic(out, json.dumps(host_record(result, args.artifact), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _profile(args, kind: str, out: Path | None) -> int:
    from export.llm.profile import profile_llm
    from export.outputs import write_text_atomic
    from runtime.manifest import load_manifest

    backend = load_manifest(args.artifact, verify=False).get("backend")
    if kind != "llm" or backend != "executorch":
        raise HandheldError(
            f"--profile reads ExecuTorch's ETDump of an LLM program; this artifact is {kind} on {backend}",
            "pass an LLM artifact exported with --backend executorch, or leave --profile out",
        )
    if args.baseline is not None and args.baseline.is_dir():
        if load_manifest(args.baseline, verify=False).get("backend") != "executorch":
            raise HandheldError(
                f"--baseline {args.baseline} is not an ExecuTorch program", "pass a .pte or an ExecuTorch LLM artifact"
            )
    result = profile_llm(args.artifact, args.baseline, args.threads)
    out = out or args.artifact / "profile.json"
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _check_baseline(kind: str, baseline: Path) -> None:
    """What each family's bench can measure side by side (checked before any run)."""
    if kind != "llm":
        raise HandheldError(
            f"--baseline is for LLM artifacts; this is a {kind} artifact",
            "leave --baseline out (SqueezeSAM's bench times its teacher by itself)",
        )
    if baseline.is_file():
        if baseline.suffix != ".pte":
            raise HandheldError(
                f"--baseline {baseline} is not a .pte program",
                "pass ExecuTorch export_llm's .pte (`make baseline`) or an LLM artifact folder",
            )
        with open(baseline, "rb") as f:
            head = f.read(8)
        if head[4:6] != b"ET":  # the flatbuffer identifier (ET12 today) after the root offset
            raise HandheldError(
                f"--baseline {baseline} is not an ExecuTorch program (no ET header)",
                "pass the .pte that `make baseline` wrote",
            )
    elif not (baseline / "manifest.json").is_file():
        raise HandheldError(
            f"--baseline {baseline} is a folder without manifest.json", "pass an LLM artifact folder or a .pte file"
        )


def cmd_demo(args) -> int:
    from export.demo import run_demo
    from export.outputs import _check_parent

    if args.out.exists() and not args.out.is_dir():
        raise HandheldError(
            f"--out {args.out} is a file, the demo writes a folder there", "pass a folder, e.g. --out artifacts"
        )
    if not args.out.exists():
        _check_parent(args.out, "--out")
    return run_demo(args.out)


def quiet_toolchain_logs(verbose: bool = False) -> None:
    """Silence the toolchain's chatter (optional CUDA kernels, deprecations, UserWarnings)
    unless --verbose: a normal run prints Handheld's own lines only."""
    import logging
    import warnings

    if verbose:
        logging.disable(logging.NOTSET)
        return
    for name in (
        "torchao",
        "torch",
        "torch.utils._pytree",
        "torch._export",
        "torch.export",
        "coremltools",
        "onnxscript",
        "executorch",
        "root",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    # libraries set their own loggers' levels when they load (torch.onnx's exporter, ExecuTorch's
    # CoreML partitioner at INFO), after this runs: drop their records below ERROR everywhere
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


class _NativeLogs:
    """Route fd 2 (C++ log lines of ExecuTorch, XNNPACK, cpuinfo; child processes' chatter) to a
    log file while Handheld's own stderr (errors, progress bars) keeps the terminal. The log is
    deleted after a clean run; its path is printed when a command fails unexpectedly."""

    def __init__(self):
        self.active = False
        try:
            real = sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):
            real = False
        if not real:
            return
        import tempfile

        sys.stderr.flush()
        self.saved_fd = os.dup(2)
        fd, self.path = tempfile.mkstemp(prefix="handheld-native-", suffix=".log")
        os.dup2(fd, 2)
        os.close(fd)
        self.original = sys.stderr
        sys.stderr = open(self.saved_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
        self.active = True

    def close(self, keep: bool) -> None:
        if not self.active:
            return
        sys.stderr.flush()
        os.dup2(self.saved_fd, 2)
        os.close(self.saved_fd)
        sys.stderr = self.original
        self.active = False
        if keep and os.path.getsize(self.path):
            print(f"handheld: the libraries' own log is in {self.path}", file=sys.stderr)
        else:
            os.unlink(self.path)


class Terminated(BaseException):
    """SIGTERM/SIGHUP: unwinds like Ctrl-C so every temp folder is removed on the way out."""


def _on_signal(signum, frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    import signal

    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv or os.environ.get("HANDHELD_VERBOSE") == "1"
    argv = [a for a in argv if a != "--verbose"]
    saved_env = {k: os.environ.get(k) for k in ("HANDHELD_VERBOSE", "TQDM_DISABLE")}
    if verbose:
        os.environ["HANDHELD_VERBOSE"] = "1"  # steps and workers read it (export/demo.py)
    quiet_toolchain_logs(verbose)
    if not verbose:
        os.environ["TQDM_DISABLE"] = "1"  # the libraries' own bars; Handheld's show (export/progress.py)
    # ExecuTorch's Python runtime stalls in attention past ~112 tokens of context if libtorch's
    # OpenMP pool runs inside its ops; set before torch loads (XNNPACK threads are set separately).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # not the main thread
            pass
    logs = _NativeLogs() if not verbose else None
    keep_log = False
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except HandheldError as err:
        print(f"handheld: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("handheld: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Terminated as sig:
        print(f"handheld: stopped by signal {sig.args[0]}; nothing half-written was left behind", file=sys.stderr)
        return 128 + int(sig.args[0])
    except BrokenPipeError:
        return 1
    except Exception as err:  # a bug, not bad input: say so, keep the traceback behind --verbose
        keep_log = True
        if verbose:
            raise
        first = error_line(err)
        print(
            f"handheld: error: unexpected {type(err).__name__}: {first}\n  fix: this is a Handheld bug; re-run with --verbose for the traceback and report it",
            file=sys.stderr,
        )
        return 1
    finally:
        if logs is not None:
            logs.close(keep_log)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for key, value in saved_env.items():  # main() may run in-process again (tests)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    sys.exit(main())
