"""`handheld learn-rotations` and `handheld eval llm`: SpinQuant rotations and the accuracy table.

Defaults live on the dataclasses (RotationRecipe, EvalConfig); flags left out keep them."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.cli.args import add_force, existing_path, float_range, int_range
from export.quant import SCHEMES
from runtime.errors import HandheldError


def add_export_parser(export_sub) -> None:
    """No `handheld export` target of its own (rotations ride on `handheld export llm`)."""


def _given(args, names: list[str]) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def add_commands(sub) -> None:
    learn = sub.add_parser(
        "learn-rotations", help="learn SpinQuant R1/R2 for an LLM checkpoint (Cayley SGD, weights frozen)"
    )
    learn.add_argument(
        "--checkpoint", type=existing_path("checkpoint"), help="HF folder or .gguf (default: the offline SmolLM2-135M)"
    )
    learn.add_argument(
        "--out", type=Path, required=True, help="rotation file to write (resumes from OUT.ckpt if present)"
    )
    add_force(learn, "rotation file")
    learn.add_argument("--scheme", choices=list(SCHEMES), help="fake quantization inside the loss")
    learn.add_argument("--steps", type=int_range(1, 100000))
    learn.add_argument("--batch", type=int_range(1, 4096))
    learn.add_argument("--seq-len", dest="seq_len", type=int_range(16, 32768))
    learn.add_argument("--lr", type=float_range(0.0, 10.0, lo_open=True))
    learn.add_argument("--momentum", type=float_range(0.0, 1.0))
    learn.add_argument("--seed", type=int_range(0, 2**63 - 1))
    learn.add_argument(
        "--weight-quant-in-loss",
        dest="weight_quant_in_loss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fake-quantize the weights in the loss too (default; --no-weight-quant-in-loss learns from activations only, about half the step cost)",
    )
    learn.set_defaults(func=cmd_learn)


def add_eval_parser(ev_sub) -> None:
    llm = ev_sub.add_parser(
        "llm", help="held-out perplexity: FP / RTN / QuaRot / SpinQuant at W4A16g32, W4A8KV8, W4A4KV4"
    )
    llm.add_argument(
        "--checkpoint", type=existing_path("checkpoint"), help="HF folder or .gguf (default: the offline SmolLM2-135M)"
    )
    llm.add_argument(
        "--rotation-file",
        dest="rotation_file",
        type=existing_path("rotation file", folder=False),
        help="learned rotations (default: the shipped SmolLM2 file)",
    )
    llm.add_argument("--out", type=Path, help="folder for eval.json and eval.png (default: artifacts/eval-llm)")
    add_force(llm)
    llm.add_argument("--windows", dest="n_windows", type=int_range(1, 10000), help="held-out windows")
    llm.add_argument("--seq-len", dest="seq_len", type=int_range(16, 32768))
    llm.add_argument("--schemes", help="comma-separated subset of W4A16g32,W4A8KV8,W4A4KV4")
    llm.add_argument("--methods", help="comma-separated subset of fp,rtn,quarot,spinquant")
    llm.add_argument(
        "--gptq",
        action="store_true",
        default=None,
        help="also measure every rotation with GPTQ weights (rows gptq, quarot+gptq, spinquant+gptq)",
    )
    llm.add_argument(
        "--gptq-windows", dest="gptq_windows", type=int_range(1, 4096), help="calibration windows for GPTQ (default 32)"
    )
    llm.set_defaults(func=cmd_eval_llm)


def cmd_learn(args) -> int:
    from export.llm.checkpoint import check_checkpoint_path
    from export.outputs import check_output
    from export.rotation.learn import RotationRecipe, learn_for_checkpoint, read_resume_state

    names = ["scheme", "steps", "batch", "seq_len", "lr", "momentum", "seed", "weight_quant_in_loss"]
    recipe = RotationRecipe(**_given(args, names))
    check_output(args.out, folder=False, force=args.force, suffixes=(".pt",))
    if args.out.with_suffix(".ckpt").exists():
        read_resume_state(args.out.with_suffix(".ckpt"))
    if args.checkpoint is not None:
        check_checkpoint_path(args.checkpoint)
    path = learn_for_checkpoint(args.checkpoint, recipe, args.out)
    print(f"wrote {path}")
    return 0


def cmd_eval_llm(args) -> int:
    from export.llm.checkpoint import check_checkpoint_path
    from export.llm.eval import EvalConfig, run_eval
    from export.outputs import check_output
    from export.rotation.rotation_file import check_rotation_file

    fields = _given(args, ["checkpoint", "rotation_file", "n_windows", "seq_len", "gptq", "gptq_windows"])
    for name in ("schemes", "methods"):
        if getattr(args, name):
            fields[name] = tuple(x.strip() for x in getattr(args, name).split(",") if x.strip())
            if not fields[name]:
                raise HandheldError(
                    f"--{name} {getattr(args, name)!r} names nothing to measure",
                    f"pass a comma-separated list, e.g. --{name} {'W4A8KV8' if name == 'schemes' else 'fp,spinquant'}",
                )
    if args.out:
        fields["out"] = str(args.out)
    cfg = EvalConfig(**fields)
    check_output(Path(cfg.out), folder=True, force=args.force)
    if args.checkpoint is not None:
        check_checkpoint_path(args.checkpoint)
    if args.rotation_file is not None:
        check_rotation_file(args.rotation_file)
    run_eval(cfg)
    return 0
