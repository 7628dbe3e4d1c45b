"""What onnxruntime's MatMulNBits computes, simulated in eager PyTorch (the ONNX parity reference).

The ONNX artifact is exported from the float (rotated) model; onnxruntime's MatMulNBitsQuantizer
then quantizes its weights. "Eager with the same quantization simulated" means, per part:

- transformer linears -> MatMulNBits bits=4, block 32 along the input dim, symmetric. The
  quantizer maps each block's signed extreme value to -8: scale = extreme / -8,
  q = clamp(round(w / scale), -8, 7) (DefaultWeightOnlyQuantizer.quant_slice_symmetric, and
  MLAS's C++ path). accuracy_level=4 runs the GEMM on int8 activations: every 32-wide block
  of each activation row is quantized symmetrically, scale = max|a| / 127 (MLAS
  QuantizeARow_CompInt8), then int8 x int4 dot products are rescaled. Simulated as
  quant-dequant of both operands followed by an fp32 matmul (exact up to summation order).
- lm_head -> MatMulNBits bits=4 (the ONNX default, GPTQ'd with the linears) or 8 (`--output-bits 8`,
  extreme -> -128), block 32, symmetric, same int8 activations.
- embedding -> int8 per-row symmetric table (the same `QuantizedEmbedding` numbers as the
  ExecuTorch export), exported as standard Gather + Cast + Mul: onnxruntime's
  GatherBlockQuantized is fed int4 only by its Python quantizer, and a gather of [S, dim]
  rows costs nothing next to the GEMMs.
The quantization constants are named here and used by both the exporter and the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from export.config import LLMQuantConfig
from export.llm.model import Llama
from export.llm.quantize import QuantizedEmbedding, untie_embeddings
from export.metrics import sqnr_db

BLOCK = 32  # MatMulNBits block_size (weights) and the int8 activation block of accuracy_level 4
ACCURACY_LEVEL = 4  # int8 activation compute
LINEAR_BITS, OUTPUT_BITS = 4, 8


def block_quantize_symmetric(w: torch.Tensor, bits: int, block: int = BLOCK) -> torch.Tensor:
    """w: [out, in] -> dequantized [out, in], blocks of `block` along `in` (MatMulNBits' K axis)."""
    out_f, in_f = w.shape
    pad = (-in_f) % block
    wb = nn.functional.pad(w.double(), (0, pad)).reshape(out_f, -1, block)  # [out, k_blocks, block]
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    mx, mn = wb.amax(-1, keepdim=True), wb.amin(-1, keepdim=True)
    extreme = torch.where(mx.abs() > mn.abs(), mx, mn)
    scale = (extreme / lo).float().double()  # scales are stored as fp32
    q = torch.where(scale == 0, torch.zeros_like(wb), (wb / scale).round()).clamp(lo, hi)
    return (q * scale).reshape(out_f, -1)[:, :in_f].float()


def int8_block_act_quant_dequant(x: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """x: [..., K] -> x with every `block`-wide slice quantized to int8 (symmetric) and back."""
    k = x.shape[-1]
    pad = (-k) % block
    xb = nn.functional.pad(x, (0, pad)).reshape(*x.shape[:-1], -1, block)
    amax = xb.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(xb * inv).clamp(-127, 127)
    return (q * (amax / 127.0)).reshape(*x.shape[:-1], -1)[..., :k]


def block_scales(w: torch.Tensor, bits: int, block: int = BLOCK) -> torch.Tensor:
    """The quantizer's per-block scale (extreme / lo) repeated per column: [out, in]."""
    out_f, in_f = w.shape
    wb = nn.functional.pad(w.double(), (0, (-in_f) % block)).reshape(out_f, -1, block)
    mx, mn = wb.amax(-1, keepdim=True), wb.amin(-1, keepdim=True)
    extreme = torch.where(mx.abs() > mn.abs(), mx, mn)
    scale = (extreme / -(2 ** (bits - 1))).float().double()
    return scale.expand_as(wb).reshape(out_f, -1)[:, :in_f]


class MatMulNBitsLinear(nn.Module):
    """Eager MatMulNBits: block-quantized weight (stored dequantized), int8 block activations.
    `weight` overrides the RTN weight (GPTQ's, on the same block scales)."""

    def __init__(self, linear: nn.Linear, bits: int, int8_activations: bool, weight: torch.Tensor | None = None):
        super().__init__()
        self.bits, self.int8_activations = bits, int8_activations
        w = block_quantize_symmetric(linear.weight.detach().float(), bits) if weight is None else weight.float()
        self.register_buffer("weight", w)
        self.bias = None if linear.bias is None else linear.bias.detach().float()

    def forward(self, x):
        if self.int8_activations:
            x = int8_block_act_quant_dequant(x)
        return nn.functional.linear(x, self.weight, self.bias)


class GatherInt8Embedding(QuantizedEmbedding):
    """int8 per-row embedding as plain ops (Gather, Cast, Mul) for ONNX; same numbers as its parent."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, S, D]
        return self.weight[tokens].float() * self.scales[tokens].unsqueeze(-1)


def int8_embedding(model: Llama, cfg: LLMQuantConfig) -> Llama:
    """Swap in the int8 embedding the ONNX graph carries (before export; the linears stay float)."""
    if cfg.embedding_bits == 8 and isinstance(model.embed_tokens, nn.Embedding):
        untie_embeddings(model)
        model.embed_tokens = GatherInt8Embedding.from_float(model.embed_tokens)
    return model


def check_onnx_quant_config(cfg: LLMQuantConfig) -> None:
    from runtime.errors import HandheldError

    if cfg.weight_bits not in (4, 16) or (cfg.weight_bits == 4 and cfg.group_size != BLOCK):
        raise HandheldError(
            f"the ONNX backend runs 4-bit weights as MatMulNBits with block {BLOCK}; got {cfg.name}",
            f"use --weight-bits 4 --group-size {BLOCK} (or 16 for fp32)",
        )
    if cfg.kv_cache_bits:
        raise HandheldError(f"the ONNX backend has no {cfg} variant", "use int8 output, fp32 KV cache")


def gptq_matmulnbits_weights(model: Llama, calibration: torch.Tensor, output_bits: int = 0) -> dict[str, torch.Tensor]:
    """GPTQ weights of every block linear (and of lm_head when `output_bits` is 4) on
    MatMulNBits' own block scales (so the artifact's integers, written by
    `export.llm.lower_onnx`, are exactly these)."""
    from export.quant import QuantScheme
    from export.quant.gptq import gptq_weights

    scales = {n: block_scales(lin.weight.detach(), LINEAR_BITS) for n, lin in model.linears().items()}
    if output_bits == 4:
        scales["lm_head"] = block_scales(model.lm_head.weight.detach(), output_bits)
    scheme = QuantScheme("matmulnbits", w_bits=LINEAR_BITS, w_group=BLOCK, w_clip_search=False)
    return gptq_weights(model, calibration, scheme, scales=scales, output_bits=4 if output_bits == 4 else 0)


def simulate_matmulnbits(model: Llama, cfg: LLMQuantConfig, calibration: torch.Tensor | None = None) -> dict:
    """Quantize `model` in place the way the ONNX artifact is; return weight SQNR per part.
    With `cfg.weight_method == "gptq"`, `calibration` ([n, S] tokens) feeds GPTQ."""
    cfg = cfg.for_backend("onnx")
    check_onnx_quant_config(cfg)
    if cfg.weight_bits == 16 and not cfg.embedding_bits and not cfg.output_bits:
        return {}
    untie_embeddings(model)
    report: dict = {}
    acts = cfg.dynamic_activations
    gptq = None
    if cfg.weight_bits == 4:
        if cfg.weight_method == "gptq":
            if calibration is None:
                from runtime.errors import HandheldError

                raise HandheldError(
                    "GPTQ needs calibration tokens", "pass calibration windows, or use weight_method='rtn'"
                )
            gptq = gptq_matmulnbits_weights(model, calibration, cfg.output_bits)
        report["weight_method"] = cfg.weight_method
        errs = []
        for name, lin in model.linears().items():
            q = MatMulNBitsLinear(lin, LINEAR_BITS, acts, None if gptq is None else gptq[name])
            errs.append(sqnr_db(lin.weight.detach(), q.weight))
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, q)
        report["linear_weight_sqnr_db_min"] = min(errs)
        report["linear_weight_sqnr_db_mean"] = sum(errs) / len(errs)
    if cfg.output_bits:  # 4 (ONNX default, GPTQ'd with GPTQ weights) or 8, MatMulNBits block 32 either way
        q = MatMulNBitsLinear(model.lm_head, cfg.output_bits, acts, gptq.get("lm_head") if gptq else None)
        report["lm_head_weight_sqnr_db"] = sqnr_db(model.lm_head.weight.detach(), q.weight)
        model.lm_head = q
    if cfg.embedding_bits == 8:
        table = model.embed_tokens.weight.detach()
        int8_embedding(model, cfg)
        report["embedding_sqnr_db"] = sqnr_db(table, model.embed_tokens.dequantize())
    return report
