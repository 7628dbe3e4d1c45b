"""`handheld learn-rotations` and `handheld eval llm`: SpinQuant rotations and the accuracy table.

Defaults live on the dataclasses (RotationRecipe, EvalConfig); flags left out keep them."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_export_parser(export_sub) -> None:
    """No `handheld export` target of its own (rotations ride on `handheld export llm`)."""


def _given(args, names: list[str]) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def add_commands(sub) -> None:
    learn = sub.add_parser("learn-rotations", help="learn SpinQuant R1/R2 for an LLM checkpoint (Cayley SGD, weights frozen)")
    learn.add_argument("--checkpoint", help="HF folder or .gguf (default: the offline SmolLM2-135M)")
    learn.add_argument("--out", type=Path, required=True, help="rotation file to write (resumes from OUT.ckpt if present)")
    learn.add_argument("--scheme", help="fake quantization inside the loss (W4A4KV4, W4A8KV8, W4A16g32)")
    learn.add_argument("--steps", type=int)
    learn.add_argument("--batch", type=int)
    learn.add_argument("--seq-len", dest="seq_len", type=int)
    learn.add_argument("--lr", type=float)
    learn.add_argument("--momentum", type=float)
    learn.add_argument("--seed", type=int)
    learn.add_argument("--weight-quant-in-loss", dest="weight_quant_in_loss", action=argparse.BooleanOptionalAction, default=None, help="fake-quantize the weights in the loss too (default; --no-weight-quant-in-loss learns from activations only, about half the step cost)")
    learn.set_defaults(func=cmd_learn)

    ev = sub.add_parser("eval", help="measure accuracy of quantized models")
    ev_sub = ev.add_subparsers(dest="family", required=True)
    llm = ev_sub.add_parser("llm", help="held-out perplexity: FP / RTN / QuaRot / SpinQuant at W4A16g32, W4A8KV8, W4A4KV4")
    llm.add_argument("--checkpoint", help="HF folder or .gguf (default: the offline SmolLM2-135M)")
    llm.add_argument("--rotation-file", dest="rotation_file", help="learned rotations (default: the shipped SmolLM2 file)")
    llm.add_argument("--out", type=Path, help="folder for eval.json and eval.png (default: artifacts/eval-llm)")
    llm.add_argument("--windows", dest="n_windows", type=int, help="held-out windows")
    llm.add_argument("--seq-len", dest="seq_len", type=int)
    llm.add_argument("--schemes", help="comma-separated subset of W4A16g32,W4A8KV8,W4A4KV4")
    llm.add_argument("--methods", help="comma-separated subset of fp,rtn,quarot,spinquant")
    llm.add_argument("--gptq", action="store_true", default=None, help="also measure every rotation with GPTQ weights (rows gptq, quarot+gptq, spinquant+gptq)")
    llm.add_argument("--gptq-windows", dest="gptq_windows", type=int, help="calibration windows for GPTQ (default 32)")
    llm.set_defaults(func=cmd_eval_llm)


def cmd_learn(args) -> int:
    from export.rotation.learn import RotationRecipe, learn_for_checkpoint

    names = ["scheme", "steps", "batch", "seq_len", "lr", "momentum", "seed", "weight_quant_in_loss"]
    recipe = RotationRecipe(**_given(args, names))
    path = learn_for_checkpoint(args.checkpoint, recipe, args.out)
    print(f"wrote {path}")
    return 0


def cmd_eval_llm(args) -> int:
    from export.llm.eval import EvalConfig, run_eval

    fields = _given(args, ["checkpoint", "rotation_file", "n_windows", "seq_len", "gptq", "gptq_windows"])
    for name in ("schemes", "methods"):
        if getattr(args, name):
            fields[name] = tuple(x.strip() for x in getattr(args, name).split(",") if x.strip())
    if args.out:
        fields["out"] = str(args.out)
    run_eval(EvalConfig(**fields))
    return 0
