"""Integer quantization of the decoder for export (8da4w by default).

- transformer linears: 4-bit symmetric group-wise weights + int8 dynamic per-token
  activations (torchao's Int8DynamicActivationIntxWeightConfig); XNNPACK runs them as
  QD8 x QB4W GEMMs.
- lm_head: int8 per-channel weights + int8 dynamic activations (QD8 x QC8W).
- embedding: int8 per-row table, run by ExecuTorch's `quantized_decomposed::embedding_byte`
  (a gather plus scale, instead of dequantizing the whole table every call).

In eager mode the quantized modules compute exactly the simulated (fake-quant) math, which
is the reference the parity harness compares the lowered artifact against.
"""

from __future__ import annotations

import copy

import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  (registers embedding_byte)
import torch
from torch import nn

from export.config import LLMQuantConfig
from export.llm.model import Llama
from export.metrics import sqnr_db
from runtime.errors import HandheldError


class QuantizedEmbedding(nn.Module):
    """int8 per-row symmetric embedding. weight: [V, D] int8, scales: [V] fp32."""

    def __init__(self, weight_int8: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight_int8)
        self.register_buffer("scales", scales)

    @classmethod
    def from_float(cls, emb: nn.Embedding) -> QuantizedEmbedding:
        w = emb.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        q = torch.clamp(torch.round(w / scales[:, None]), -128, 127).to(torch.int8)
        return cls(q, scales)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float() * self.scales[:, None]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, S, D]
        if not torch.compiler.is_exporting():
            # eager: gather rows, then scale (the same products as the op, without the
            # op's eager fallback dequantizing the whole [V, D] table on every call)
            return self.weight[tokens].float() * self.scales[tokens].unsqueeze(-1)
        return torch.ops.quantized_decomposed.embedding_byte.dtype(
            self.weight, self.scales, None, -128, 127, tokens, dtype=torch.float32
        )


def untie_embeddings(model: Llama) -> Llama:
    """Give lm_head its own copy of a tied embedding, so each can be quantized on its own."""
    if model.lm_head.weight is model.embed_tokens.weight:
        model.lm_head.weight = nn.Parameter(model.embed_tokens.weight.detach().clone(), requires_grad=False)
    return model


def _dequantized(weight) -> torch.Tensor:
    return weight.dequantize() if hasattr(weight, "dequantize") else weight


def _gptq_into_torchao(
    model: Llama, float_model: Llama, calibration: torch.Tensor, cfg: LLMQuantConfig, lm_head_bits: int = 0
) -> dict:
    """Replace the integer weights torchao chose (RTN) by GPTQ's, on torchao's own scales (so
    the lowered kernels and the eager reference compute exactly the GPTQ weights)."""
    import time

    from export.quant import QuantScheme
    from export.quant.gptq import gptq_weights

    t0 = time.perf_counter()
    linears = dict(model.linears())
    bits = dict.fromkeys(linears, cfg.weight_bits)
    if lm_head_bits:
        linears["lm_head"], bits["lm_head"] = model.lm_head, lm_head_bits
    scales, ranges = {}, {}
    for name, lin in linears.items():
        w = lin.weight
        groups = w.scale.shape[-1] if w.scale.dim() > 1 else 1
        scales[name] = (
            w.scale.detach().float().reshape(w.shape[0], groups).repeat_interleave(w.shape[1] // groups, dim=1)
        )
        ranges[name] = (-(2 ** (bits[name] - 1)), 2 ** (bits[name] - 1) - 1)
    scheme = QuantScheme(
        "export", w_bits=cfg.weight_bits, w_group=cfg.group_size if cfg.weight_bits == 4 else None, w_clip_search=False
    )
    quantized = gptq_weights(float_model, calibration, scheme, scales=scales, output_bits=lm_head_bits)
    for name, lin in linears.items():
        lo, hi = ranges[name]
        q = torch.clamp(torch.round(quantized[name].float() / scales[name]), lo, hi)
        if lin.weight.zero_point is not None and bool((lin.weight.zero_point != 0).any()):
            raise RuntimeError(f"{name}: GPTQ expects torchao's symmetric weights")
        lin.weight.qdata.copy_(q.to(lin.weight.qdata.dtype))
    return {
        "weight_method": "gptq",
        "gptq_tokens": int(calibration.numel()),
        "gptq_seconds": round(time.perf_counter() - t0, 1),
    }


def quantize_llm(
    model: Llama, cfg: LLMQuantConfig, calibration: torch.Tensor | None = None, gptq_lm_head: bool | None = None
) -> dict:
    """Quantize `model` in place; return the weight error (SQNR dB) per part, quantizers report their error.

    calibration: [n, S] tokens for GPTQ (`cfg.weight_method == "gptq"`); required then. With GPTQ,
    `gptq_lm_head` says whether a quantized lm_head is GPTQ'd too (on the quantized blocks'
    outputs) or keeps torchao's RTN; None: GPTQ for a 4-bit lm_head only, where it pays (held-out
    perplexity 22.85 -> 21.50, export/llm/lm_head_eval.py), RTN for int8 (21.17 vs 21.13)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    cfg = cfg.for_backend("executorch")
    if cfg.weight_bits == 16 and not cfg.embedding_bits and not cfg.output_bits:
        return {}
    untie_embeddings(model)
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    report: dict[str, float] = {}
    gptq = cfg.weight_method == "gptq" and cfg.weight_bits < 16
    if gptq and calibration is None:
        raise HandheldError("GPTQ needs calibration tokens", "pass calibration windows, or use weight_method='rtn'")
    float_model = copy.deepcopy(model) if gptq else None
    if cfg.weight_bits < 16:
        dtype = torch.int4 if cfg.weight_bits == 4 else torch.int8
        gran = PerGroup(cfg.group_size) if cfg.weight_bits == 4 else PerAxis(0)
        linear_cfg = (
            Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=gran)
            if cfg.dynamic_activations
            else IntxWeightOnlyConfig(weight_dtype=dtype, granularity=gran)
        )
        quantize_(model, linear_cfg, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn.startswith("layers."))
    if cfg.output_bits:
        out_cfg = Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int8 if cfg.output_bits == 8 else torch.int4,
            weight_granularity=PerAxis(0) if cfg.output_bits == 8 else PerGroup(cfg.group_size),
        )
        quantize_(model, out_cfg, filter_fn=lambda m, fqn: fqn == "lm_head")
    if cfg.weight_bits < 16:
        # GPTQ on torchao's grids: the block linears, and lm_head on the quantized blocks' outputs
        if gptq_lm_head is None:
            gptq_lm_head = cfg.output_bits == 4
        lm_head_bits = cfg.output_bits if gptq_lm_head else 0
        report.update(
            _gptq_into_torchao(model, float_model, calibration, cfg, lm_head_bits) if gptq else {"weight_method": "rtn"}
        )
        errs = [sqnr_db(before[n], _dequantized(m.weight)) for n, m in model.linears().items()]
        report["linear_weight_sqnr_db_min"] = min(errs)
        report["linear_weight_sqnr_db_mean"] = sum(errs) / len(errs)
    if cfg.output_bits:
        report["lm_head_method"] = "gptq" if gptq and gptq_lm_head else "rtn"
        report["lm_head_weight_sqnr_db"] = sqnr_db(before["lm_head"], _dequantized(model.lm_head.weight))
    if cfg.embedding_bits == 8:
        float_table = model.embed_tokens.weight.detach()
        model.embed_tokens = QuantizedEmbedding.from_float(model.embed_tokens)
        report["embedding_sqnr_db"] = sqnr_db(float_table, model.embed_tokens.dequantize())
    return report


class SimulatedQuantLinear(nn.Module):
    """Eager stand-in for a torchao-quantized linear with the same math, weights
    dequantized once: int8 asymmetric per-token activation quant-dequant (when the
    original had it), then fp32 matmul with the dequantized weight. torchao's own module
    re-dequantizes its weight on every call, which makes token-by-token parity runs slow."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dynamic_activations: bool):
        super().__init__()
        self.register_buffer("weight", weight)
        self.bias = bias
        self.dynamic_activations = dynamic_activations

    def forward(self, x):
        from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
            _apply_int8_act_asym_per_token_quant_dequant,
        )

        if self.dynamic_activations:
            x = _apply_int8_act_asym_per_token_quant_dequant(x)
        return nn.functional.linear(x, self.weight, self.bias)


def with_cached_dequantized_weights(model: nn.Module) -> nn.Module:
    """Copy of `model` whose torchao linears are SimulatedQuantLinear (same outputs, faster)."""
    import copy

    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        w = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and hasattr(w, "dequantize"):
            acts = getattr(w, "activation_quantization", None) is not None
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], SimulatedQuantLinear(w.dequantize(), module.bias, acts))
    return model
