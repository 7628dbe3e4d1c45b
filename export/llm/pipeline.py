"""`handheld export llm`: checkpoint -> transforms -> export wrapper -> backend artifact.

Transform order (each `Llama -> Llama`): rotations first (they need the float weights and
fold into them), quantization last (it consumes the rotated weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from export.config import LLMExportConfig, LLMQuantConfig, Rotation, to_jsonable
from export.llm.checkpoint import Checkpoint, load_checkpoint
from export.llm.model import Llama
from export.llm.quantize import quantize_llm
from export.llm.wrapper import INPUT_NAMES, CachedDecoder
from export.manifest import atomic_artifact_dir, write_manifest
from runtime.registry import Registry

TOKENIZER_FILE = "tokenizer.json"

# backend name -> function(wrapper, folder, ctx) -> manifest fields (model_file, ...)
LLM_BACKENDS: Registry[Callable] = Registry("LLM backend")


@dataclass
class PreparedModel:
    checkpoint: Checkpoint
    model: Llama  # rotated + quantized (eager, simulated quantization)
    wrapper: CachedDecoder
    quant_report: dict
    float_model: Llama | None = None  # rotated, unquantized: for backends whose own tools quantize
    quant: LLMQuantConfig | None = None


# backend name -> "module:function(model, LLMQuantConfig) -> report": the eager model with the
# backend's own quantization simulated (parity reference); backends not listed use torchao 8da4w
SIMULATED_QUANT = {
    "onnx": "export.llm.quant_onnx:simulate_matmulnbits",
    "coreml": "export.llm.quant_coreml:simulate_coreml_weights",
}


# backends whose parity check wraps the harness (CoreML: MIL program on Linux; ONNX: own tolerances too)
PARITY_CHECKS = {
    "coreml": "export.llm.coreml_check:check_coreml_parity",
    "onnx": "export.backends.onnx:check_onnx_parity",
}


def _parity_check(backend: str) -> Callable:
    import importlib

    from export.llm.parity import check_llm_parity

    if backend not in PARITY_CHECKS:
        return check_llm_parity
    module, _, name = PARITY_CHECKS[backend].partition(":")
    return getattr(importlib.import_module(module), name)


def _simulated_quantizer(backend: str) -> Callable:
    import importlib

    if backend not in SIMULATED_QUANT:
        return quantize_llm
    module, _, name = SIMULATED_QUANT[backend].partition(":")
    return getattr(importlib.import_module(module), name)


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

    ck = checkpoint or load_checkpoint(cfg.checkpoint)
    quant = cfg.quant.for_backend(cfg.backend.value)
    model = copy.deepcopy(ck.model)
    if cfg.rotation is not Rotation.NONE:
        from export.rotation import apply_rotation

        model = apply_rotation(model, cfg.rotation, cfg.rotation_file, quantized_kv=quant.kv_cache_bits > 0)
    float_model = copy.deepcopy(model) if cfg.backend.value in SIMULATED_QUANT else None
    quantizer = _simulated_quantizer(cfg.backend.value)
    report = quantizer(model, quant, gptq_calibration(ck, quant))  # every backend's quantizer takes GPTQ's windows
    return PreparedModel(ck, model, CachedDecoder(model, cfg.max_seq_len).eval(), report, float_model, quant)


@LLM_BACKENDS.register("executorch")
def _lower_executorch(prepared: PreparedModel, folder: Path) -> dict:
    from export.backends.executorch import Method, lower_to_executorch

    w = prepared.wrapper
    meta = w.runtime_metadata(prepared.checkpoint.bos_id, prepared.checkpoint.eos_ids)
    methods = {"forward": Method(w, w.example_inputs(), w.dynamic_shapes())}
    summary = lower_to_executorch(methods, folder / "model.pte", meta, desc="llm")["forward"]
    return {"model_file": "model.pte", "delegation": summary}


@LLM_BACKENDS.register("onnx")
def _lower_onnx(prepared: PreparedModel, folder: Path) -> dict:
    from export.backends.onnx import lower_llm_onnx

    return lower_llm_onnx(prepared, folder)


@LLM_BACKENDS.register("coreml")
def _lower_coreml(prepared: PreparedModel, folder: Path) -> dict:
    from export.backends.coreml import lower_llm_coreml

    return lower_llm_coreml(prepared, folder)


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


def export_llm(cfg: LLMExportConfig, out: Path, check_parity: bool = True) -> dict:
    """Export, check parity inside the temp folder, then publish `out` atomically."""
    return export_prepared(cfg, prepare_model(cfg), out, check_parity)


def export_prepared(cfg: LLMExportConfig, prepared: PreparedModel, out: Path, check_parity: bool = True) -> dict:
    lower = LLM_BACKENDS.get(cfg.backend.value)
    inputs, outputs = io_specs(prepared.wrapper)
    quant = (prepared.quant or cfg.quant).for_backend(cfg.backend.value)  # lm_head bits resolved
    with atomic_artifact_dir(Path(out)) as folder:
        fields = lower(prepared, folder)
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
            **fields,
        )
        if check_parity:
            manifest["parity"] = _parity_check(cfg.backend.value)(folder, prepared)
    return manifest


ALL_BACKENDS = ("executorch", "onnx", "coreml")


def export_all_backends(cfg: LLMExportConfig, out_root: Path, check_parity: bool = True) -> dict[str, dict]:
    """`--backend all`: one checkpoint, one rotation/quantization config, a folder per backend
    under `out_root`. A backend that fails gets its error recorded and printed (never a silent
    skip); the others still export. Returns backend -> manifest, or {"error": message}."""
    from runtime.errors import HandheldError

    checkpoint = load_checkpoint(cfg.checkpoint)
    results: dict[str, dict] = {}
    for name in ALL_BACKENDS:
        backend_cfg = dataclasses.replace(cfg, backend=name)
        try:
            results[name] = export_prepared(
                backend_cfg, prepare_model(backend_cfg, checkpoint), Path(out_root) / name, check_parity
            )
        except HandheldError as err:
            print(f"backend {name}: FAILED: {err}")
            results[name] = {"error": str(err)}
    return results
