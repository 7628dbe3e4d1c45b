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

from export.config import Backend, LLMExportConfig, LLMQuantConfig, Rotation, to_jsonable
from export.llm.checkpoint import Checkpoint, load_checkpoint
from export.llm.model import Llama
from export.llm.wrapper import INPUT_NAMES, CachedDecoder
from export.manifest import atomic_artifact_dir, write_manifest
from runtime.registry import Registry

TOKENIZER_FILE = "tokenizer.json"


@dataclass
class PreparedModel:
    checkpoint: Checkpoint
    model: Llama  # rotated + quantized (eager, simulated quantization)
    wrapper: CachedDecoder
    quant_report: dict
    float_model: Llama | None = None  # rotated, unquantized: for backends whose own tools quantize
    quant: LLMQuantConfig | None = None


@dataclass(frozen=True)
class LLMRecipe:
    """How the LLM goes onto one backend; each step a "module:function" resolved on first use
    (so importing the pipeline does not import every backend's tools)."""

    lower: str  # (PreparedModel, folder) -> manifest fields (model_file, ...)
    simulate: str  # (model, LLMQuantConfig, GPTQ windows) -> report: the backend's quantization in eager
    simulator: str  # how the parity report names that simulation
    parity: str  # (folder, PreparedModel) -> parity report, also written into the manifest
    own_quantizer: bool  # the backend's own tool quantizes the float model (a float copy is kept)

    def step(self, name: str) -> Callable:
        from export.harness import resolve

        return resolve(getattr(self, name))


LLM_RECIPES: Registry[LLMRecipe] = Registry("LLM backend")
LLM_RECIPES.register(Backend.EXECUTORCH)(
    LLMRecipe(
        lower="export.llm.pipeline:lower_executorch",
        simulate="export.llm.quantize:quantize_llm",
        simulator="torchao",
        parity="export.llm.parity:check_llm_parity",
        own_quantizer=False,
    )
)
LLM_RECIPES.register(Backend.ONNX)(
    LLMRecipe(
        lower="export.llm.lower_onnx:lower_llm_onnx",
        simulate="export.llm.quant_onnx:simulate_matmulnbits",
        simulator="simulate_matmulnbits",
        parity="export.llm.lower_onnx:check_onnx_parity",  # the harness, judged again with the ONNX tolerances
        own_quantizer=True,
    )
)
LLM_RECIPES.register(Backend.COREML)(
    LLMRecipe(
        lower="export.llm.lower_coreml:lower_llm_coreml",
        simulate="export.llm.quant_coreml:simulate_coreml_weights",
        simulator="simulate_coreml_weights",
        parity="export.llm.coreml_check:check_coreml_parity",  # MIL program on Linux, Apple's runtime on macOS
        own_quantizer=True,
    )
)


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
    recipe = LLM_RECIPES.get(cfg.backend)
    float_model = copy.deepcopy(model) if recipe.own_quantizer else None
    report = recipe.step("simulate")(
        model, quant, gptq_calibration(ck, quant)
    )  # every backend's quantizer takes GPTQ's windows
    return PreparedModel(ck, model, CachedDecoder(model, cfg.max_seq_len).eval(), report, float_model, quant)


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
            **fields,
        )
        if check_parity:
            manifest["parity"] = recipe.step("parity")(folder, prepared)
    return manifest


def export_all_backends(cfg: LLMExportConfig, out_root: Path, check_parity: bool = True) -> dict[str, dict]:
    """`--backend all`: one checkpoint, one rotation/quantization config, a folder per backend
    under `out_root`. A backend that fails gets its error recorded and printed (never a silent
    skip); the others still export. Returns backend -> manifest, or {"error": message}."""
    from runtime.errors import HandheldError

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
