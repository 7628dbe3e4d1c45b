"""`handheld export longvu`: the five fixed-shape pieces as methods of one ExecuTorch program.

    dino(pixels [1, 3, Sd, Sd])          -> feats [1, Nd, Dd]       XNNPACK fp32 (int8 PT2E: quantize_vision)
    siglip(pixels [1, 3, Ss, Ss])        -> feats [1, g*g, Dv]      XNNPACK fp32 (int8 PT2E: quantize_vision)
    project(feats [1, g*g, Dv])          -> hi [1, 144, dim], lo [1, 64, dim]
    embed(tokens [1, L])                 -> embeds [1, L, dim]      int8 table (embedding_byte)
    decode(embeds [1, S, dim], pos [1])  -> logits [1, vocab]       8da4w, static KV cache

One program keeps one file, one set of checksums and one load; the methods share nothing but
the file. Selection between them runs on the host (runtime/video_qa.py). The artifact is checked
against the eager pieces before it is published (export/longvu/parity.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.config import Backend
from export.longvu.config import LongVUConfig
from export.longvu.pipeline import NOT_MEANINGFUL, LongVUModel, build_model
from export.manifest import atomic_artifact_dir, write_manifest
from export.progress import tqdm
from runtime.errors import HandheldError, error_line
from runtime.registry import Registry

MODEL_FILE = "longvu.pte"

# Backend -> function(model, folder) -> manifest fields
LONGVU_BACKENDS: Registry[Callable] = Registry("LongVU backend")


@dataclass
class Piece:
    module: nn.Module
    example_inputs: tuple
    dynamic_shapes: Any
    inputs: list[dict]
    outputs: list[dict]


def pieces(m: LongVUModel) -> dict[str, Piece]:
    cfg, dim, vocab = m.cfg, m.decoder.model.args.dim, m.decoder.model.args.vocab_size
    d, s, c = cfg.dino, cfg.siglip, cfg.compress
    px = lambda size: {
        "dtype": "float32",
        "shape": [1, 3, size, size],
        "range": [0, 1],
        "layout": "RGB, bilinear-resized, unnormalized",
    }
    seq = {"seq": [1, cfg.context_len - 1]}
    return {
        "dino": Piece(
            m.dino,
            (torch.rand(1, 3, d.image_size, d.image_size),),
            None,
            [{"name": "pixels", **px(d.image_size)}],
            [{"name": "feats", "dtype": "float32", "shape": [1, d.grid**2, d.dim]}],
        ),
        "siglip": Piece(
            m.siglip,
            (torch.rand(1, 3, s.image_size, s.image_size),),
            None,
            [{"name": "pixels", **px(s.image_size)}],
            [{"name": "feats", "dtype": "float32", "shape": [1, s.grid**2, s.dim]}],
        ),
        "project": Piece(
            m.projector,
            (torch.randn(1, s.grid**2, s.dim),),
            None,
            [{"name": "feats", "dtype": "float32", "shape": [1, s.grid**2, s.dim]}],
            [
                {"name": "hi", "dtype": "float32", "shape": [1, c.hi_tokens, dim]},
                {"name": "lo", "dtype": "float32", "shape": [1, c.lo_tokens, dim]},
            ],
        ),
        "embed": Piece(
            m.embed,
            m.embed.example_inputs(),
            m.embed.dynamic_shapes(),
            [{"name": "tokens", "dtype": "int64", "shape": [1, "seq"], "dynamic": seq}],
            [{"name": "embeds", "dtype": "float32", "shape": [1, "seq", dim]}],
        ),
        "decode": Piece(
            m.decoder,
            m.decoder.example_inputs(),
            m.decoder.dynamic_shapes(),
            [
                {"name": "embeds", "dtype": "float32", "shape": [1, "seq", dim], "dynamic": seq},
                {"name": "input_pos", "dtype": "int64", "shape": [1]},
            ],
            [{"name": "logits", "dtype": "float32", "shape": [1, vocab]}],
        ),
    }


@LONGVU_BACKENDS.register(Backend.EXECUTORCH)
def _lower_executorch(m: LongVUModel, folder: Path) -> dict:
    parts = pieces(m)
    meta = {
        "get_max_seq_len": m.cfg.context_len,
        "get_vocab_size": m.decoder.model.args.vocab_size,
        "get_eos_ids": list(m.checkpoint.eos_ids),
    }
    from export.backends.executorch import Method, lower_to_executorch

    methods = {name: Method(p.module, p.example_inputs, p.dynamic_shapes) for name, p in parts.items()}
    fix = "report it with the config; the eager pipeline (`handheld ask-video --eager`) still works"
    summary = lower_to_executorch(methods, folder / MODEL_FILE, meta, desc="longvu", fix=fix)
    methods = {name: {"inputs": p.inputs, "outputs": p.outputs} for name, p in parts.items()}
    return {"model_file": MODEL_FILE, "methods": methods, "delegation": summary}


# fp32 mlprograms (iOS 17) on CoreML; run on Linux by runtime/mil_interpreter.py with PyTorch kernels
VISION_METHODS = ("dino", "siglip", "project")


@LONGVU_BACKENDS.register(Backend.COREML)
def _lower_coreml(m: LongVUModel, folder: Path) -> dict:
    """Every method its own .mlpackage: the vision methods fp32 (iOS 17), `embed` and `decode`
    fp16 with CoreML's int4 per-block / int8 weights (iOS 18; decode's KV cache as states)."""
    import copy

    from export.backends.coreml import export_static_coreml
    from export.llm.lower_coreml import DEPLOYMENT_TARGET, compressed_decoder, convert_embedding, export_coreml
    from export.llm.quant_coreml import BLOCK, check_coreml_quant_config
    from export.llm.quantize import untie_embeddings
    from export.longvu.decoder import StatefulEmbedsDecoder, TokenEmbedding

    parts = pieces(m)
    methods = {}
    for name in tqdm(VISION_METHODS, desc="longvu: coreml convert", unit="method"):
        p, file = parts.pop(name), f"{name}.mlpackage"
        try:
            export_static_coreml(
                p.module,
                p.example_inputs,
                ([s["name"] for s in p.inputs], [s["name"] for s in p.outputs]),
                folder / file,
                int8=False,
            )
        except Exception as err:
            raise HandheldError(
                f"CoreML conversion of LongVU's {name} failed: {type(err).__name__}: {error_line(err)}",
                "report it with the config; the ExecuTorch backend is the reference path",
            ) from err
        methods[name] = {"file": file, "inputs": p.inputs, "outputs": p.outputs}
    quant = m.cfg.llm.quant.for_backend("coreml")
    check_coreml_quant_config(quant)
    llm = untie_embeddings(copy.deepcopy(m.llm_float))  # the table and lm_head are compressed apart
    a, ctx = llm.args, m.cfg.context_len
    text = {
        "embed": (
            TokenEmbedding(llm.embed_tokens, ctx).eval(),
            convert_embedding,
            (16, 0, quant.embedding_bits),
            {"inputs": ["tokens [1, L] int32"]},
        ),
        "decode": (
            compressed_decoder(StatefulEmbedsDecoder(llm, ctx).eval(), m.llm),
            None,
            (quant.weight_bits, quant.output_bits, 0),
            {
                "inputs": [
                    "embeds [1, S, dim] fp32",
                    "causal_mask [1, 1, S, input_pos + S] fp32 (0 / -inf), built by the runtime from input_pos",
                ],
                "state_shapes": f"key_cache, value_cache [{a.n_layers}, {a.n_kv_heads}, {ctx}, {a.head_dim}] fp16",
            },
        ),
    }
    for name, (module, convert, bits, io) in text.items():
        p, file = parts.pop(name), f"{name}.mlpackage"
        summary = export_coreml(module, folder / file, *bits, **({"convert": convert} if convert else {}))
        methods[name] = {"file": file, "inputs": p.inputs, "outputs": p.outputs, "coreml": {**io, **summary}}
    return {
        "model_file": methods["decode"]["file"],
        "methods": methods,
        "coreml": {
            "vision": {"deployment_target": "iOS17", "precision": "fp32"},
            "text": {
                "deployment_target": DEPLOYMENT_TARGET,
                "precision": "fp16",
                "weights": f"int{quant.weight_bits} per-block {BLOCK} linear_symmetric ({quant.weight_method}) transformer linears; lm_head {quant.output_bits or 16}-bit; "
                f"embedding table {'int8 per-row' if quant.embedding_bits == 8 else 'fp16'}",
            },
            "checked_on_linux": "MIL programs interpreted in fp32 by runtime/mil_interpreter.py (vision: PyTorch kernels; text: coremltools' value inference); not Apple's runtime",
        },
    }


@LONGVU_BACKENDS.register(Backend.ONNX)
def _lower_onnx(m: LongVUModel, folder: Path) -> dict:
    """One .onnx per method: vision fp32; `embed` with the (int8) table; `decode` the LLM's ONNX
    graph with embeddings in (MatMulNBits with the simulation's integers, fixed-size KV buffers)."""
    import copy

    from export.backends.onnx import OPSET, export_program
    from export.llm.lower_onnx import export_simulated_decoder_onnx
    from export.llm.onnx_ops import onnx_translations
    from export.llm.quant_onnx import check_onnx_quant_config
    from export.llm.wrapper_onnx import past_names, present_names
    from export.longvu.decoder import PastKVEmbedsDecoder

    quant = m.cfg.llm.quant.for_backend("onnx")
    check_onnx_quant_config(quant)
    parts = pieces(m)
    dec = PastKVEmbedsDecoder(copy.deepcopy(m.llm_float), m.cfg.context_len).eval()
    a, ctx = m.llm.args, m.cfg.context_len
    kv = lambda n, length: {"name": n, "dtype": "float32", "shape": [1, a.n_kv_heads, length, a.head_dim]}
    inputs = [
        {"name": "embeds", "dtype": "float32", "shape": [1, "seq", a.dim], "dynamic": {"seq": [1, ctx - 1]}},
        {"name": "input_pos", "dtype": "int64", "shape": [1]},
    ]
    inputs += [
        {**kv(n, ctx), "note": "layer cache; positions >= input_pos + seq are never read"}
        for n in past_names(a.n_layers)
    ]
    outputs = parts.pop("decode").outputs + [
        {**kv(n, ctx), "note": "the cache with the new positions written: bind it to the past buffer"}
        for n in present_names(a.n_layers)
    ]
    methods, translations = {}, onnx_translations()
    for name, p in tqdm(parts.items(), desc="longvu: onnx export", unit="method"):
        file = f"{name}.onnx"
        names_in, names_out = [s["name"] for s in p.inputs], [s["name"] for s in p.outputs]
        try:
            program = export_program(p.module, p.example_inputs, (names_in, names_out), p.dynamic_shapes, translations)
            program.save(str(folder / file))
        except Exception as err:
            raise HandheldError(
                f"ONNX export of LongVU's {name} failed: {type(err).__name__}: {error_line(err)}",
                "report it with the config; the ExecuTorch backend is the reference path",
            ) from err
        methods[name] = {"file": file, "inputs": p.inputs, "outputs": p.outputs}
    summary = export_simulated_decoder_onnx(dec, folder / "decode.onnx", quant, m.llm)
    methods["decode"] = {"file": "decode.onnx", "inputs": inputs, "outputs": outputs, "onnx_graph": summary}
    return {"model_file": "decode.onnx", "methods": methods, "onnx_opset": OPSET}


def export_longvu(cfg: LongVUConfig, out: Path, check_parity: bool = True, model: LongVUModel | None = None) -> dict:
    """Build (or take) the eager pieces, lower them, check parity, publish `out` atomically."""
    from export.llm.pipeline import _save_tokenizer

    m = model or build_model(cfg)
    lower = LONGVU_BACKENDS.get(cfg.backend)
    with atomic_artifact_dir(Path(out)) as folder:
        fields = lower(m, folder)
        tokenizer = _save_tokenizer(m.checkpoint, folder)
        manifest = write_manifest(
            folder,
            "longvu",
            backend=cfg.backend.value,
            config=m.cfg.to_dict(),
            sources={
                "dino": cfg.dino_checkpoint or f"seeded random (seed {cfg.seed})",
                "siglip": cfg.siglip_checkpoint or f"seeded random (seed {cfg.seed + 1})",
                "projector": cfg.projector_checkpoint or f"seeded random (seed {cfg.seed + 2})",
                "llm": m.checkpoint.source,
            },
            random_vision=cfg.random_vision,
            notice=NOT_MEANINGFUL if cfg.random_vision else "",
            tokenizer=tokenizer,
            quantization=m.quant_report,
            **fields,
        )
        if check_parity:
            from export.longvu.parity import check_longvu_parity

            manifest["parity"] = check_longvu_parity(folder, m)
    return manifest
