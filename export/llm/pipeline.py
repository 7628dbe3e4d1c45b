"""`handheld export llm`: checkpoint -> transforms -> export wrapper -> backend artifact.

Transform order (each `Llama -> Llama`): rotations first (they need the float weights and
fold into them), quantization last (it consumes the rotated weights).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from export.config import Backend, LLMExportConfig, LLMQuantConfig, Rotation, to_jsonable
from export.llm.checkpoint import Checkpoint, load_checkpoint
from export.llm.model import Llama
from export.llm.recipes import LLM_RECIPES
from export.llm.wrapper import INPUT_NAMES, CachedDecoder
from export.manifest import atomic_artifact_dir, write_manifest
from runtime.context import ContextWindow
from runtime.errors import HandheldError

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class PreparedModel:
    checkpoint: Checkpoint
    model: Llama  # rotated + quantized (eager, simulated quantization)
    wrapper: CachedDecoder
    quant_report: dict
    float_model: Llama | None = None  # rotated, unquantized: for backends whose own tools quantize
    quant: LLMQuantConfig | None = None


def gptq_calibration(ck: Checkpoint, quant: LLMQuantConfig) -> torch.Tensor | None:
    """GPTQ's calibration windows (the Wikipedia calibration split), when the config asks for GPTQ."""
    if quant.weight_method != "gptq" or quant.weight_bits == 16:
        return None
    from export.config import GPTQ_SEQ_LEN
    from export.rotation.learn import calibration_windows

    return calibration_windows(ck.tokenizer, GPTQ_SEQ_LEN, quant.gptq_windows, quant.gptq_windows)


def prepare_model(cfg: LLMExportConfig, checkpoint: Checkpoint | None = None) -> PreparedModel:
    """Load and transform the model exactly as the export does (also the parity reference)."""
    import copy

    quant = cfg.quant.for_backend(cfg.backend.value)
    recipe = LLM_RECIPES.get(cfg.backend)
    recipe.kv_cache(cfg.backend, quant.kv_cache_bits)  # refused before the checkpoint loads
    ck = checkpoint or load_checkpoint(cfg.checkpoint)
    model = copy.deepcopy(ck.model)
    if cfg.rotation is not Rotation.NONE:
        from export.rotation import apply_rotation

        model = apply_rotation(model, cfg.rotation, cfg.rotation_file, quantized_kv=quant.kv_cache_bits > 0)
    float_model = copy.deepcopy(model) if recipe.own_quantizer else None
    # every backend's quantizer takes GPTQ's windows; the int8 cache, when asked, is the wrapper's
    report = recipe.step("simulate")(model, quant, gptq_calibration(ck, quant))
    wrapper = CachedDecoder(model, cfg.max_seq_len, quant.kv_cache_bits).eval()
    return PreparedModel(ck, model, wrapper, report, float_model, quant)


def lower_executorch(prepared: PreparedModel, folder: Path) -> dict:
    """The LLM's ExecuTorch recipe: the simulated model's wrapper (torchao 8da4w) -> XNNPACK model.pte."""
    from export.backends.executorch import Method, lower_to_executorch

    w = prepared.wrapper
    meta = w.runtime_metadata(prepared.checkpoint.bos_id, prepared.checkpoint.eos_ids)
    methods = {"forward": Method(w, w.example_inputs(), w.dynamic_shapes())}
    summary = lower_to_executorch(methods, folder / "model.pte", meta, desc="llm")["forward"]
    return {"model_file": "model.pte", "delegation": summary}


def _save_tokenizer(ck: Checkpoint, folder: Path) -> dict:
    tok = ck.tokenizer
    tok.backend_tokenizer.save(str(folder / TOKENIZER_FILE))
    return {
        "file": TOKENIZER_FILE,
        "bos_id": ck.bos_id,
        "eos_ids": list(ck.eos_ids),
        "bos_token": tok.bos_token or "",
        "eos_token": tok.eos_token or "",
        "chat_template": ck.chat_template,
    }


def io_specs(wrapper: CachedDecoder) -> tuple[list, list]:
    vocab = wrapper.model.args.vocab_size
    inputs = [
        {
            "name": INPUT_NAMES[0],
            "dtype": "int64",
            "shape": [1, "seq"],
            "dynamic": {"seq": [1, wrapper.max_seq_len - 1]},
        },
        {"name": INPUT_NAMES[1], "dtype": "int64", "shape": [1]},
    ]
    outputs = [{"name": "logits", "dtype": "float32", "shape": [1, vocab]}]
    return inputs, outputs


def kv_cache_fields(args, max_seq_len: int, dtype: str) -> dict:
    """What the manifest says of the KV cache: its dtype, layout and size at max_seq_len."""
    from export.llm.wrapper import kv_cache_mb

    return {
        "dtype": dtype,
        "positions": max_seq_len,
        "per_layer_shape": [1, max_seq_len, args.n_kv_heads, args.head_dim],
        "scales": "an fp32 scale and an int8 zero point per position and head" if dtype == "int8" else None,
        "mb": round(kv_cache_mb(args, max_seq_len, dtype), 3),
    }


def export_llm(cfg: LLMExportConfig, out: Path, check_parity: bool = True) -> dict:
    """Export, check parity inside the temp folder, then publish `out` atomically."""
    return export_prepared(cfg, prepare_model(cfg), out, check_parity)


def export_prepared(cfg: LLMExportConfig, prepared: PreparedModel, out: Path, check_parity: bool = True) -> dict:
    recipe = LLM_RECIPES.get(cfg.backend)
    inputs, outputs = io_specs(prepared.wrapper)
    quant = (prepared.quant or cfg.quant).for_backend(cfg.backend.value)  # lm_head bits resolved
    with atomic_artifact_dir(Path(out)) as folder:
        fields = recipe.step("lower")(prepared, folder)
        tokenizer = _save_tokenizer(prepared.checkpoint, folder)
        manifest = write_manifest(
            folder,
            "llm",
            backend=cfg.backend.value,
            config=to_jsonable(dataclasses.replace(cfg, quant=quant)),
            source_checkpoint=prepared.checkpoint.source,
            architecture={"family": prepared.checkpoint.family, **to_jsonable(prepared.model.args)},
            max_seq_len=cfg.max_seq_len,
            inputs=inputs,
            outputs=outputs,
            tokenizer=tokenizer,
            quantization={"scheme": quant.name, "output_bits": quant.output_bits, **prepared.quant_report},
            kv_cache=kv_cache_fields(
                prepared.model.args, cfg.max_seq_len, recipe.kv_cache(cfg.backend, quant.kv_cache_bits)
            ),
            context=ContextWindow(cfg.max_seq_len).to_manifest(),  # what a chat keeps when the cache fills
            **fields,
        )
        if check_parity:
            manifest["parity"] = recipe.step("parity")(folder, prepared)
    return manifest


def export_all_backends(cfg: LLMExportConfig, out_root: Path, check_parity: bool = True) -> dict[str, dict]:
    """`--backend all`: one checkpoint, one rotation/quantization config, a folder per backend
    under `out_root`. A backend that fails gets its error recorded and printed (never a silent
    skip); the others still export. Returns backend -> manifest, or {"error": message}."""

    checkpoint = load_checkpoint(cfg.checkpoint)
    results: dict[str, dict] = {}
    for name in [b.value for b in Backend if b in LLM_RECIPES]:  # the enum's order
        backend_cfg = dataclasses.replace(cfg, backend=name)
        try:
            results[name] = export_prepared(
                backend_cfg, prepare_model(backend_cfg, checkpoint), Path(out_root) / name, check_parity
            )
        except HandheldError as err:
            print(f"backend {name}: FAILED: {err}")
            results[name] = {"error": str(err)}
    return results
