"""How the LLM goes onto each backend: one registry keyed by `Backend`.

A recipe names its steps as "module:function" strings resolved on first use, so this module
imports nothing heavy: the CLI validates a config against it before any model loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from export.config import Backend
from runtime.errors import HandheldError
from runtime.registry import Registry


@dataclass(frozen=True)
class LLMRecipe:
    """How the LLM goes onto one backend; each step a "module:function" resolved on first use
    (so importing the pipeline does not import every backend's tools)."""

    lower: str  # (PreparedModel, folder) -> manifest fields (model_file, ...)
    simulate: str  # (model, LLMQuantConfig, GPTQ windows) -> report: the backend's quantization in eager
    simulator: str  # how the parity report names that simulation
    parity: str  # (folder, PreparedModel) -> parity report, also written into the manifest
    own_quantizer: bool  # the backend's own tool quantizes the float model (a float copy is kept)
    kv_caches: dict[int, str]  # LLMQuantConfig.kv_cache_bits -> the cache dtype the artifact stores

    def kv_cache(self, backend: Backend, bits: int) -> str:
        """The cache dtype for `bits`; an error naming what this backend stores otherwise."""
        if bits not in self.kv_caches:
            stored = ", ".join(f"{b} = an {d} cache" for b, d in self.kv_caches.items())
            raise HandheldError(
                f"the {backend.value} backend has no {bits}-bit KV cache",
                f"use --kv-cache-bits {' or '.join(str(b) for b in self.kv_caches)} ({stored})",
            )
        return self.kv_caches[bits]

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
        kv_caches={0: "fp32", 8: "int8"},  # int8: per-token asymmetric, llama::custom_quantized_sdpa
    )
)
LLM_RECIPES.register(Backend.ONNX)(
    LLMRecipe(
        lower="export.llm.lower_onnx:lower_llm_onnx",
        simulate="export.llm.quant_onnx:simulate_matmulnbits",
        simulator="simulate_matmulnbits",
        parity="export.llm.lower_onnx:check_onnx_parity",  # the harness, judged again with the ONNX tolerances
        own_quantizer=True,
        kv_caches={0: "fp32"},
    )
)
LLM_RECIPES.register(Backend.COREML)(
    LLMRecipe(
        lower="export.llm.lower_coreml:lower_llm_coreml",
        simulate="export.llm.quant_coreml:simulate_coreml_weights",
        simulator="simulate_coreml_weights",
        parity="export.llm.coreml_check:check_coreml_parity",  # MIL program on Linux, Apple's runtime on macOS
        own_quantizer=True,
        kv_caches={0: "fp16"},  # the ct.StateType states
    )
)
