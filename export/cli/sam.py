"""CLI for SqueezeSAM: `export sam`, `segment`, `train sam`."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.config import Backend
from export.errors import HandheldError
from export.sam.config import SamExportConfig, TrainConfig


def add_export_parser(export_sub) -> None:
    p = export_sub.add_parser("sam", help="export SqueezeSAM (fp32 + int8) and check it on real photos")
    p.add_argument("--backend", default="executorch", choices=[b.value for b in Backend] + ["all"])
    p.add_argument("--out", type=Path, required=True, help="artifact folder (with --backend all: one subfolder per backend)")
    p.add_argument("--checkpoint", help="a `handheld train sam` checkpoint (default: the shipped export/sam/weights one)")
    p.add_argument("--with-teacher", action="store_true", help="also export the LiteMedSAM teacher the same way (bench baseline)")
    p.add_argument("--calibration-images", type=int, default=SamExportConfig.calibration_images)
    p.set_defaults(func=cmd_export)


def add_commands(sub) -> None:
    s = sub.add_parser("segment", help="segment a photo with clicks (none: auto mode) and write an overlay PNG")
    s.add_argument("model", type=Path, help="artifact folder from `handheld export sam`, or a SqueezeSAM checkpoint .pt")
    s.add_argument("--image", type=Path, required=True)
    s.add_argument("--click", action="append", default=[], metavar="X,Y[,+|-]", help="pixel from the top-left; + (default) or -")
    s.add_argument("--out", type=Path, default=Path("mask.png"))
    s.add_argument("--variant", default="int8", choices=["int8", "fp32"])
    s.set_defaults(func=cmd_segment)

    t = sub.add_parser("train", help="train a model family")
    t_sub = t.add_subparsers(dest="family", required=True)
    ts = t_sub.add_parser("sam", help="distil SqueezeSAM from a SAM-family teacher (resumable)")
    ts.add_argument("--teacher", default=TrainConfig.teacher, help="lite-medsam (offline) or mobile-sam")
    ts.add_argument("--teacher-checkpoint", help="teacher weights (needed for mobile-sam)")
    ts.add_argument("--images", nargs="*", default=[], metavar="DIR", help="extra photo folders (the offline samples are always used)")
    ts.add_argument("--preset", default=TrainConfig.preset)
    ts.add_argument("--steps", type=int, default=TrainConfig.steps)
    ts.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ts.add_argument("--lr", type=float, default=TrainConfig.lr)
    ts.add_argument("--time-limit", type=float, default=TrainConfig.time_limit_s, help="stop and save after this many seconds (0 = none)")
    ts.add_argument("--device", default=TrainConfig.device)
    ts.add_argument("--seed", type=int, default=TrainConfig.seed)
    ts.add_argument("--out", default=TrainConfig.out)
    ts.set_defaults(func=cmd_train)


def parse_click(text: str):
    from export.sam.clicks import Click

    parts = text.split(",")
    try:
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("+", "-")):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise HandheldError(f"cannot read click {text!r}", "write X,Y or X,Y,+ or X,Y,- (pixels from the top-left corner)") from None
    # a click on integer pixel (x, y) means that pixel's centre
    return Click(x + 0.5, y + 0.5, len(parts) == 2 or parts[2] == "+")


def cmd_export(args: argparse.Namespace) -> int:
    from export.sam.export import export_sam
    from export.sam.parity import format_report

    backends = [b for b in Backend] if args.backend == "all" else [Backend(args.backend)]
    for backend in backends:
        out = args.out / backend.value if args.backend == "all" else args.out
        # the teacher is a bench baseline: with `all`, skip it for CoreML (no prediction on Linux)
        teacher = args.with_teacher and not (args.backend == "all" and backend is Backend.COREML)
        cfg = SamExportConfig(checkpoint=args.checkpoint, backend=backend, with_teacher=teacher,
                              calibration_images=args.calibration_images)
        report = export_sam(cfg, out)
        print(f"wrote {out}")
        print("\n".join(format_report(report)))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from runtime.segment import segment_to_png

    result = segment_to_png(args.model, args.image, [parse_click(c) for c in args.click], args.out, args.variant)
    print(f"{result['model']}: mask covers {100 * result['mask_fraction']:.1f}% of the image, clicks {result['clicks']}")
    print(f"wrote {result['overlay']} and {result['mask']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from export.sam.train import train

    cfg = TrainConfig(preset=args.preset, teacher=args.teacher, teacher_checkpoint=args.teacher_checkpoint, images=tuple(args.images),
                      out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, time_limit_s=args.time_limit,
                      seed=args.seed, device=args.device)
    result = train(cfg)
    print(f"wrote {result['checkpoint']} after {result['steps']} steps")
    print("held-out mIoU vs teacher: " + ", ".join(f"{k}={v}" for k, v in result.items() if k.startswith("miou")))
    return 0
