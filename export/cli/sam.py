"""CLI for SqueezeSAM: `export sam`, `segment`, `train sam`, `eval sam`."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.cli.args import add_force, existing_path, float_range, int_range
from export.config import Backend
from export.sam.config import SamExportConfig, TrainConfig
from runtime.errors import HandheldError


def add_export_parser(export_sub) -> None:
    p = export_sub.add_parser("sam", help="export SqueezeSAM (fp32 + int8) and check it on real photos")
    p.add_argument("--backend", default="executorch", choices=[b.value for b in Backend] + ["all"])
    p.add_argument(
        "--out", type=Path, required=True, help="artifact folder (with --backend all: one subfolder per backend)"
    )
    add_force(p)
    p.add_argument(
        "--checkpoint",
        type=existing_path("checkpoint", folder=False),
        help="a `handheld train sam` checkpoint (default: the shipped export/sam/weights one)",
    )
    p.add_argument(
        "--with-teacher", action="store_true", help="also export the LiteMedSAM teacher the same way (bench baseline)"
    )
    p.add_argument("--calibration-images", type=int_range(1, 10000), default=SamExportConfig.calibration_images)
    p.set_defaults(func=cmd_export)


def add_eval_parser(ev_sub) -> None:
    e = ev_sub.add_parser("sam", help="score a segmenter against the hand-checked ground truth of the held-out photos")
    e.add_argument(
        "model",
        nargs="?",
        type=existing_path("segmenter"),
        help="artifact folder from `handheld export sam`, or a SqueezeSAM checkpoint .pt (default: the shipped checkpoint)",
    )
    e.add_argument("--variant", default="int8", choices=["int8", "fp32"], help="an artifact's variant (default int8)")
    e.add_argument("--out", type=Path, required=True, help="folder for eval.json and contact_sheet.png")
    add_force(e)
    e.set_defaults(func=cmd_eval)


def add_commands(sub) -> None:
    s = sub.add_parser("segment", help="segment a photo with clicks (none: auto mode) and write an overlay PNG")
    s.add_argument(
        "model",
        type=existing_path("segmenter"),
        help="artifact folder from `handheld export sam`, or a SqueezeSAM checkpoint .pt",
    )
    s.add_argument("--image", type=existing_path("image", folder=False), required=True)
    s.add_argument(
        "--click", action="append", default=[], metavar="X,Y[,+|-]", help="pixel from the top-left; + (default) or -"
    )
    s.add_argument(
        "--out", type=Path, default=Path("mask.png"), help="overlay PNG (the mask goes beside it as NAME_mask.png)"
    )
    add_force(s, "--out PNG and its mask")
    s.add_argument("--variant", default="int8", choices=["int8", "fp32"])
    s.set_defaults(func=cmd_segment)

    t = sub.add_parser("train", help="train a model family")
    t_sub = t.add_subparsers(dest="family", required=True)
    ts = t_sub.add_parser("sam", help="distil SqueezeSAM from a SAM-family teacher (resumable)")
    ts.add_argument(
        "--teacher",
        default=TrainConfig.teacher,
        choices=["lite-medsam", "mobile-sam"],
        help="lite-medsam (offline) or mobile-sam",
    )
    ts.add_argument(
        "--teacher-checkpoint",
        type=existing_path("teacher checkpoint", folder=False),
        help="teacher weights (needed for mobile-sam)",
    )
    ts.add_argument(
        "--images",
        nargs="*",
        type=existing_path("photo folder", folder=True),
        default=[],
        metavar="DIR",
        help="extra photo folders (the offline samples are always used)",
    )
    ts.add_argument("--preset", default=TrainConfig.preset)
    ts.add_argument("--steps", type=int_range(1, 10**7), default=TrainConfig.steps)
    ts.add_argument("--batch-size", type=int_range(1, 4096), default=TrainConfig.batch_size)
    ts.add_argument("--lr", type=float_range(0.0, 1.0, lo_open=True), default=TrainConfig.lr)
    ts.add_argument(
        "--composite-prob",
        type=float_range(0.0, 1.0),
        default=TrainConfig.composite_prob,
        help="share of copy-paste composite samples (exact masks, a clear subject)",
    )
    ts.add_argument(
        "--eval-every",
        type=int_range(1, 10**7),
        default=TrainConfig.eval_every,
        help="steps between ground-truth evaluations; the best model is kept",
    )
    ts.add_argument(
        "--time-limit",
        type=float_range(0.0),
        default=TrainConfig.time_limit_s,
        help="stop and save after this many seconds (0 = none)",
    )
    ts.add_argument("--device", default=TrainConfig.device)
    ts.add_argument("--seed", type=int_range(0, 2**63 - 1), default=TrainConfig.seed)
    ts.add_argument(
        "--out",
        type=Path,
        default=Path(TrainConfig.out),
        help="checkpoint to write (resumes from OUT.resume.pt when it exists)",
    )
    add_force(ts, "checkpoint")
    ts.set_defaults(func=cmd_train)


def parse_click(text: str):
    from runtime.clicks import Click

    parts = text.split(",")
    try:
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("+", "-")):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise HandheldError(
            f"cannot read click {text!r}", "write X,Y or X,Y,+ or X,Y,- (pixels from the top-left corner)"
        ) from None
    # a click on integer pixel (x, y) means that pixel's centre
    return Click(x + 0.5, y + 0.5, len(parts) == 2 or parts[2] == "+")


def cmd_export(args: argparse.Namespace) -> int:
    from export.outputs import check_output
    from export.sam.export import export_sam
    from export.sam.model import load_checkpoint
    from export.sam.parity import format_report

    check_output(args.out, folder=True, force=args.force)
    if args.checkpoint is not None:
        load_checkpoint(args.checkpoint)  # seconds: a bad file fails before calibration and lowering
    backends = [b for b in Backend] if args.backend == "all" else [Backend(args.backend)]
    for backend in backends:
        out = args.out / backend.value if args.backend == "all" else args.out
        # the teacher is a bench baseline: with `all`, skip it for CoreML (no prediction on Linux)
        teacher = args.with_teacher and not (args.backend == "all" and backend is Backend.COREML)
        cfg = SamExportConfig(
            checkpoint=args.checkpoint,
            backend=backend,
            with_teacher=teacher,
            calibration_images=args.calibration_images,
        )
        report = export_sam(cfg, out)
        print(f"wrote {out}")
        print("\n".join(format_report(report)))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from export.outputs import check_output
    from export.sam.predictor import mask_path, segment_to_png

    clicks = [parse_click(c) for c in args.click]
    check_output(args.out, folder=False, force=args.force, suffixes=(".png",))
    check_output(mask_path(args.out), folder=False, force=args.force, flag="the mask PNG")
    if args.image.resolve() in (args.out.resolve(), mask_path(args.out).resolve()):
        raise HandheldError(f"--out {args.out} would overwrite the input image", "write the overlay to another file")
    result = segment_to_png(args.model, args.image, clicks, args.out, args.variant)
    print(
        f"{result['model']}: mask covers {100 * result['mask_fraction']:.1f}% of the image, clicks {result['clicks']}"
    )
    print(f"wrote {result['overlay']} and {result['mask']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from export.outputs import check_output
    from export.sam.evaluate import format_summary, run_sam_eval
    from export.sam.predictor import open_segmenter

    check_output(args.out, folder=True, force=args.force)
    if args.model is not None:
        open_segmenter(args.model, args.variant)  # a wrong file or artifact fails before any work
    result = run_sam_eval(args.model, args.variant, args.out)
    print("\n".join(format_summary(result)))
    print(f"wrote {args.out}/eval.json and {args.out}/contact_sheet.png")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from export.outputs import check_output
    from export.sam.data import check_no_held_out
    from export.sam.train import curve_path, pick_device, read_resume_state, resume_path, train

    if args.out.is_dir():
        raise HandheldError(
            f"--out {args.out} is a folder, training writes a checkpoint file",
            f"pass a file, e.g. {args.out / 'squeezesam.pt'}",
        )
    resuming = resume_path(args.out).is_file()
    if resuming:
        read_resume_state(resume_path(args.out), steps=args.steps)
    # an existing checkpoint is replaced when this run resumes it (its own resume file), else only with --force
    check_output(args.out, folder=False, force=args.force or resuming, suffixes=(".pt",))
    for extra in (curve_path(args.out), curve_path(args.out).with_suffix(".png")):
        check_output(extra, folder=False, force=args.force or resuming, flag="the training curve beside the checkpoint")
    pick_device(args.device)
    check_no_held_out(args.images)  # reads the folders: no usable photo, or a held-out one, fails here
    cfg = TrainConfig(
        preset=args.preset,
        teacher=args.teacher,
        teacher_checkpoint=args.teacher_checkpoint,
        images=tuple(args.images),
        out=str(args.out),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        time_limit_s=args.time_limit,
        seed=args.seed,
        device=args.device,
        composite_prob=args.composite_prob,
        eval_every=args.eval_every,
    )
    result = train(cfg)
    print(
        f"wrote {result['checkpoint']}: the best of {result['steps']} steps (step {result['best_step']}), curve {result['curve']}"
    )
    print("against the hand-checked ground truth: " + ", ".join(f"{k}={v}" for k, v in result["ground_truth"].items()))
    return 0
