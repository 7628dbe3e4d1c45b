"""CLI for phone bundles and reports: `handheld bundle`, `handheld verify`, `handheld report`."""

from __future__ import annotations

import json
from pathlib import Path

from export.bundle.contract import TARGETS
from export.cli.args import add_force, artifact_dir, existing_path


def add_export_parser(export_sub) -> None:
    """Bundles are made from exports, they add no `handheld export` family."""


def add_commands(sub) -> None:
    b = sub.add_parser("bundle", help="pack artifacts into an app-ready folder + zip for the Android or iOS demo app")
    b.add_argument(
        "artifacts", type=artifact_dir, nargs="+", metavar="ARTIFACT", help="artifact folders from `handheld export`"
    )
    b.add_argument("--target", required=True, choices=list(TARGETS))
    b.add_argument("--out", type=Path, required=True, help="bundle folder to write (DIR.zip is written beside it)")
    b.add_argument("--no-zip", action="store_true", help="write the folder only")
    add_force(b, "bundle folder and zip")
    b.set_defaults(func=cmd_bundle)

    v = sub.add_parser("verify", help="check a bundle (folder or zip): schema, checksums, every named file present")
    v.add_argument("bundle", type=existing_path("bundle"))
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser("report", help="render benchmark results (any device) as a PNG and a self-contained HTML page")
    r.add_argument(
        "results",
        type=existing_path("bench result", folder=False),
        nargs="+",
        metavar="RESULTS",
        help="bench JSON files (from `handheld bench`)",
    )
    r.add_argument("--out", type=Path, required=True, help="folder for report.png and report.html")
    add_force(r, "report folder")
    r.set_defaults(func=cmd_report)


def cmd_bundle(args) -> int:
    from export.bundle.bundle import BundleConfig, build_bundle, zip_path
    from export.outputs import check_distinct, check_output

    check_output(args.out, folder=True, force=args.force)
    check_distinct(args.out, args.artifacts)
    if not args.no_zip:
        check_output(zip_path(args.out), folder=False, force=args.force, flag="the bundle zip")
        check_distinct(zip_path(args.out), args.artifacts, flag="the bundle zip")
    cfg = BundleConfig(target=args.target, out=args.out, artifacts=tuple(args.artifacts), make_zip=not args.no_zip)
    bundle = build_bundle(cfg)
    for entry in bundle["models"]:
        print(f"  {entry['dir']:20} {entry['size_bytes'] / 2**20:8.1f} MiB")
    print(
        f"wrote {args.out}"
        + ("" if args.no_zip else f" and {args.out}.zip")
        + f" ({cfg.target.value}, {len(bundle['files'])} files)"
    )
    return 0


def cmd_verify(args) -> int:
    from export.bundle.verify import verify_bundle

    print(json.dumps(verify_bundle(args.bundle), indent=2))
    print("bundle OK")
    return 0


def cmd_device_bench(args, device, out: Path | None = None) -> int:
    """`handheld bench DIR --device adb:SERIAL|ios:UDID` (the bench parser lives in export/cli/__init__.py)."""
    from export.device import DeviceBenchConfig, run_device_bench
    from export.outputs import write_text_atomic

    fields = {"warmup": args.warmup} if args.warmup is not None else {}
    cfg = DeviceBenchConfig(
        device=device, threads=tuple(args.threads), iterations=args.runs, runner=args.runner, **fields
    )
    record = run_device_bench(args.artifact, cfg)
    if out:
        write_text_atomic(out, json.dumps(record, indent=2) + "\n")
    for m in record["metrics"]:
        print(f"  {m['name']:24} {m['value']:10.2f} {m['unit']:8} threads={m.get('threads', '-')}")
    print(f"wrote {out or cfg.results_dir(args.artifact) / 'bench.json'}")
    return 0


def cmd_report(args) -> int:
    from export.outputs import check_distinct, check_output
    from export.report import render_report

    check_output(args.out, folder=True, force=args.force)
    check_distinct(args.out, args.results)
    paths = render_report(list(args.results), args.out)
    print("\n".join(f"wrote {p}" for p in paths))
    return 0
