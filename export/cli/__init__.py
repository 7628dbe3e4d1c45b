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

from export.errors import HandheldError

FAMILY_CLIS = ["export.cli.llm", "export.cli.bundle", "export.cli.longvu", "export.cli.sam", "export.cli.llm_eval"]


def _families():
    return [importlib.import_module(name) for name in FAMILY_CLIS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handheld", description="Export research models to phones and prove they still work there.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="export a model family to a phone backend")
    export_sub = export.add_subparsers(dest="family", required=True)
    for family in _families():
        family.add_export_parser(export_sub)
        family.add_commands(sub)

    p = sub.add_parser("parity", help="check an artifact against its eager model; non-zero exit on failure")
    p.add_argument("artifact", type=Path)
    p.add_argument("--json", type=Path, help="also write the parity report here")
    p.set_defaults(func=cmd_parity)

    b = sub.add_parser("bench", help="measure an artifact's speed, memory and size")
    b.add_argument("artifact", type=Path)
    b.add_argument("--json", type=Path, help="write the results here (default: DIR/bench.json)")
    b.add_argument("--baseline", type=Path, help="a comparable artifact to measure in the same run (e.g. ExecuTorch's export_llm .pte)")
    b.add_argument("--threads", default="1,2", help="comma-separated XNNPACK thread counts")
    b.add_argument("--runs", type=int, default=3, help="measured runs per setting (median reported)")
    b.add_argument("--device", default="host", help="host (default), adb:SERIAL or ios:UDID")
    b.add_argument("--runner", type=Path, help="phones: ExecuTorch runner binary to push (executor_runner, llama_main); default: the demo app")
    b.add_argument("--warmup", type=int, help="phones: discarded runs before the measured ones")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="the main job on the embedded defaults: export, check, run every model")
    d.add_argument("--out", type=Path, default=Path("artifacts"))
    d.set_defaults(func=cmd_demo)
    return parser


def _kind(artifact: Path) -> str:
    from export.manifest import load_manifest

    return load_manifest(artifact, verify=False)["kind"]


def cmd_parity(args) -> int:
    from export.harness import PARITY, resolve

    report = resolve(PARITY.get(_kind(args.artifact)))(args.artifact)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


def cmd_bench(args) -> int:
    from export.device import DeviceSpec
    from export.device.results import host_record
    from export.harness import BENCH, resolve

    device = DeviceSpec.parse(args.device)
    if not device.is_host:
        from export.cli.bundle import cmd_device_bench

        return cmd_device_bench(args, device)

    threads = tuple(int(t) for t in args.threads.split(","))
    result = resolve(BENCH.get(_kind(args.artifact)))(args.artifact, baseline=args.baseline, threads=threads, runs=args.runs)
    out = args.json or args.artifact / "bench.json"
    out.write_text(json.dumps(host_record(result, args.artifact), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def cmd_demo(args) -> int:
    from export.demo import run_demo

    return run_demo(args.out)


def quiet_toolchain_logs() -> None:
    """Silence import-time chatter of the toolchain (optional CUDA kernels, deprecations)."""
    import logging
    import warnings

    for name in ("torchao", "torch.utils._pytree", "torch._export", "coremltools", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*(TracerWarning|torch.jit|_check_is_size).*")


def main(argv: list[str] | None = None) -> int:
    quiet_toolchain_logs()
    # ExecuTorch's Python runtime stalls in attention past ~112 tokens of context if libtorch's
    # OpenMP pool runs inside its ops; set before torch loads (XNNPACK threads are set separately).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except HandheldError as err:
        print(f"handheld: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("handheld: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
