"""Handheld's one config path: frozen dataclasses with Enums, validated on construction.

Defaults live here and only here; the CLI builds these objects and named presets map
one-to-one onto them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePath
from typing import Any

from runtime.errors import HandheldError, parse_enum


class Backend(str, Enum):
    EXECUTORCH = "executorch"
    ONNX = "onnx"
    COREML = "coreml"


class Rotation(str, Enum):
    NONE = "none"
    QUAROT = "quarot"  # random Hadamard R1/R2
    SPINQUANT = "spinquant"  # learned R1/R2 (Cayley SGD)


WEIGHT_METHODS = ("gptq", "rtn")

# lm_head bits when the config leaves them open. ONNX: 4-bit MatMulNBits, GPTQ'd with the
# linears (49152 x 576 at 8 bits is a fifth of a decode step's weight traffic; on SmolLM2 the
# 4-bit GPTQ head costs +1.5% held-out perplexity, 21.32 vs 21.00, and makes decode match
# onnxruntime-genai's builder, whose head is 4-bit RTN). ExecuTorch and CoreML keep int8.
DEFAULT_OUTPUT_BITS = {Backend.EXECUTORCH: 8, Backend.ONNX: 4, Backend.COREML: 8}
GPTQ_SEQ_LEN = 512


@dataclass(frozen=True)
class LLMQuantConfig:
    """8da4w by default: 4-bit group-wise weights, int8 dynamic per-token activations."""

    weight_bits: int = 4
    group_size: int = 32
    dynamic_activations: bool = True  # int8 per-token activations into every linear
    embedding_bits: int = 8  # 0 keeps the embedding table fp32
    # lm_head: 8 = int8 per channel, 4 = group-wise like the linears (GPTQ'd with them), 0 = fp32;
    # None = the backend's default (DEFAULT_OUTPUT_BITS)
    output_bits: int | None = None
    kv_cache_bits: int = 0  # 0 = fp32 cache, 8 = int8 cache
    # block linears' weights: "gptq" (error spread through calibration Hessians, on the
    # exporter's own grid) or "rtn"; every backend (CoreML: handed to its converter as compression metadata)
    weight_method: str = "gptq"
    gptq_windows: int = 16  # calibration windows of 512 tokens (the Wikipedia calibration split)

    def __post_init__(self):
        if self.weight_bits not in (4, 8, 16):
            raise HandheldError(f"weight_bits={self.weight_bits} is not supported", "use 4, 8 or 16 (16 = unquantized)")
        if self.group_size <= 0 or self.group_size % 16:
            raise HandheldError(f"group_size={self.group_size} is not supported", "use a multiple of 16, e.g. 32")
        if self.embedding_bits not in (0, 8):
            raise HandheldError(f"embedding_bits={self.embedding_bits}", "use 8 or 0 (fp32)")
        if self.output_bits not in (None, 0, 4, 8):
            raise HandheldError(f"output_bits={self.output_bits}", "use 8, 4 or 0 (fp32)")
        if self.kv_cache_bits not in (0, 8):
            raise HandheldError(f"kv_cache_bits={self.kv_cache_bits}", "use 8 or 0 (fp32)")
        if self.weight_method not in WEIGHT_METHODS:
            raise HandheldError(f"weight_method={self.weight_method!r}", f"use one of: {', '.join(WEIGHT_METHODS)}")
        if self.gptq_windows < 1:
            raise HandheldError(f"gptq_windows={self.gptq_windows}", "use at least 1 calibration window")

    def for_backend(self, backend: Backend | str) -> LLMQuantConfig:
        """This config with the backend's lm_head default filled in (unchanged when set)."""
        if self.output_bits is not None:
            return self
        default = DEFAULT_OUTPUT_BITS[parse_enum(Backend, backend, "backend")]
        return dataclasses.replace(self, output_bits=default if self.weight_bits < 16 else 0)

    @property
    def name(self) -> str:
        if self.weight_bits == 16:
            return "fp32"
        act = "8da" if self.dynamic_activations else "w"
        kv = f"-kv{self.kv_cache_bits}" if self.kv_cache_bits else ""
        return f"{act}{self.weight_bits}w-g{self.group_size}{kv}"


@dataclass(frozen=True)
class LLMExportConfig:
    checkpoint: str | None = None  # HF folder or .gguf file; None = the offline SmolLM2 demo weights
    backend: Backend = Backend.EXECUTORCH
    max_seq_len: int = 512  # static KV cache length (prompt + generated tokens)
    quant: LLMQuantConfig = field(default_factory=LLMQuantConfig)
    # SpinQuant + GPTQ: the best measured 8da4w perplexity on SmolLM2 (README "SpinQuant")
    rotation: Rotation = Rotation.SPINQUANT
    rotation_file: str | None = None  # learned R1/R2 (spinquant); None = the shipped SmolLM2 file

    def __post_init__(self):
        object.__setattr__(self, "backend", parse_enum(Backend, self.backend, "backend"))
        object.__setattr__(self, "rotation", parse_enum(Rotation, self.rotation, "rotation"))
        if not 16 <= self.max_seq_len <= 32768:
            raise HandheldError(f"max_seq_len={self.max_seq_len} is out of range", "use 16..32768")

    def to_dict(self) -> dict:
        return to_jsonable(self)


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, PurePath):  # a CLI path option
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def llm_config_from_dict(d: dict) -> LLMExportConfig:
    """Rebuild an export config from a manifest's `config` field."""
    fields = {k: v for k, v in d.items() if k != "quant"}
    return LLMExportConfig(**fields, quant=LLMQuantConfig(**d.get("quant", {})))


LLM_PRESETS: dict[str, LLMExportConfig] = {
    "smollm2-8da4w": LLMExportConfig(),  # SpinQuant + GPTQ: the best measured 8da4w perplexity
    "smollm2-8da4w-quarot": LLMExportConfig(rotation=Rotation.QUAROT),
    "smollm2-8da4w-rtn": LLMExportConfig(
        rotation=Rotation.NONE, quant=LLMQuantConfig(weight_method="rtn")
    ),  # no rotation, RTN
    "smollm2-fp32": LLMExportConfig(
        rotation=Rotation.NONE,
        quant=LLMQuantConfig(weight_bits=16, dynamic_activations=False, embedding_bits=0, output_bits=0),
    ),
}
