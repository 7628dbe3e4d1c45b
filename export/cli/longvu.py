"""CLI for LongVU: `export longvu`, `ask-video`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from export.cli.args import add_force, artifact_dir, existing_path, float_range, int_range, text_arg, thread_count
from export.longvu.config import PRESETS, LongVUConfig
from runtime.errors import HandheldError
from runtime.video import VideoConfig

DEFAULT_PRESET = "longvu-smollm2"  # int8 vision + 8da4w decoder on XNNPACK
BACKEND_PRESETS = {
    "onnx": "longvu-smollm2-onnx",
    "coreml": "longvu-smollm2-coreml",
}  # fp32 vision; each backend's own int4 text decoder


def add_export_parser(export_sub) -> None:
    p = export_sub.add_parser(
        "longvu", help="export LongVU's pieces (DINOv2, SigLIP, projector, embedding, decoder) as one program"
    )
    p.add_argument("--backend", default="executorch", choices=["executorch", "onnx", "coreml"])
    p.add_argument("--out", type=Path, required=True)
    add_force(p)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=f"encoder sizes and defaults (default: {DEFAULT_PRESET}; {BACKEND_PRESETS})",
    )
    p.add_argument(
        "--dino",
        type=existing_path("DINOv2 checkpoint"),
        help="DINOv2 checkpoint: HF folder, .safetensors/.bin, or LongVU's checkpoint (default: seeded random)",
    )
    p.add_argument(
        "--siglip",
        type=existing_path("SigLIP checkpoint"),
        help="SigLIP checkpoint: HF folder, .safetensors/.bin, or LongVU's checkpoint (default: seeded random)",
    )
    p.add_argument(
        "--projector",
        type=existing_path("projector file", folder=False),
        help="file holding mm_projector.{0,2}.* (default: seeded random)",
    )
    p.add_argument(
        "--checkpoint",
        type=existing_path("checkpoint"),
        help="LLM: HF folder or .gguf (default: the offline SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--context-len",
        type=int_range(256, 32768),
        help=f"decoder KV cache = whole multimodal context (preset: {PRESETS[DEFAULT_PRESET].context_len})",
    )
    p.add_argument(
        "--fps",
        type=float_range(0.0, 60.0, lo_open=True),
        help=f"frames sampled per second (preset: {VideoConfig.fps})",
    )
    p.add_argument("--max-frames", type=int_range(1, 4096), help=f"frame cap (preset: {VideoConfig.max_frames})")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.set_defaults(func=cmd_export)


def add_commands(sub) -> None:
    a = sub.add_parser("ask-video", help="answer a question about a video with a LongVU artifact alone")
    a.add_argument("artifact", type=artifact_dir)
    a.add_argument("--video", type=existing_path("video", folder=False), required=True)
    a.add_argument("--question", required=True, type=text_arg("question", max_chars=2000))
    a.add_argument("--max-new-tokens", type=int_range(1, 32768), help="default: the artifact's reserved answer length")
    a.add_argument("--threads", type=thread_count, default=2)
    a.set_defaults(func=cmd_ask_video)


def build_config(args: argparse.Namespace) -> LongVUConfig:
    cfg = PRESETS[args.preset or BACKEND_PRESETS.get(args.backend, DEFAULT_PRESET)]
    video = {k: v for k, v in {"fps": args.fps, "max_frames": args.max_frames}.items() if v is not None}
    llm = {k: v for k, v in {"checkpoint": args.checkpoint, "max_seq_len": args.context_len}.items() if v is not None}
    return dataclasses.replace(
        cfg,
        backend=args.backend,
        video=dataclasses.replace(cfg.video, **video),
        llm=dataclasses.replace(cfg.llm, **llm),
        dino_checkpoint=args.dino,
        siglip_checkpoint=args.siglip,
        projector_checkpoint=args.projector,
    )


def cmd_export(args: argparse.Namespace) -> int:
    from export.llm.checkpoint import check_checkpoint_path
    from export.longvu.export import export_longvu
    from export.outputs import check_output

    check_output(args.out, folder=True, force=args.force)
    cfg = build_config(args)  # validates sizes against the preset before any weights load
    if args.checkpoint is not None:
        check_checkpoint_path(args.checkpoint)
    manifest = export_longvu(cfg, args.out, check_parity=not args.no_parity)
    print(f"wrote {args.out} ({manifest['model_file']}: {', '.join(manifest['methods'])})")
    if manifest["notice"]:
        print(manifest["notice"])
    parity = manifest.get("parity")
    return 0 if parity is None or parity["passed"] else 1


def cmd_ask_video(args: argparse.Namespace) -> int:
    from runtime.generate import SamplingConfig
    from runtime.video import decode, probe
    from runtime.video_qa import ask, open_pieces

    probe(args.video)  # a photo or a text file fails here, before the pieces load
    pieces, tokenizer, manifest = open_pieces(args.artifact, threads=args.threads)
    video = decode(args.video, pieces.cfg.video)
    reserved = pieces.cfg.max_new_tokens
    if args.max_new_tokens is not None and args.max_new_tokens > reserved:
        raise HandheldError(
            f"--max-new-tokens {args.max_new_tokens} is more than the {reserved} answer tokens this artifact reserves in its context",
            f"pass --max-new-tokens {reserved} or less (or re-export with a larger --context-len)",
        )
    sampling = SamplingConfig(max_new_tokens=reserved if args.max_new_tokens is None else args.max_new_tokens)
    answer = ask(pieces, tokenizer, video, args.question, sampling)
    print(answer.text)
    if manifest.get("notice"):
        print(f"\n{manifest['notice']}")
    print(format_report(answer), file=sys.stderr)
    return 0


def format_report(answer) -> str:
    c, sel, t = answer.selection.counts, answer.selection, answer.timings
    return "\n".join(
        [
            f"frames: {c['frames_sampled']} sampled -> {c['frames_after_dedup']} after temporal dedup (kept {sel.frames}); "
            f"full resolution: {sel.full_res}",
            f"tokens: {c['tokens_sampled']} sampled -> {c['tokens_after_dedup']} dedup -> {c['tokens_after_query']} cross-modal query "
            f"-> {c['tokens_after_stc']} spatial compression -> {c['tokens_after_truncation']} truncation (budget {c['budget']}); "
            f"prompt {answer.prompt_tokens} tokens",
            "time: "
            + ", ".join(f"{k.removesuffix('_s')} {v * 1000:.0f} ms" for k, v in t.items())
            + f"; {len(answer.generation.tokens)} tokens generated, stopped by {answer.generation.stopped_by}",
        ]
    )
