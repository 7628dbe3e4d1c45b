"""What coremltools' weight quantization stores, simulated in eager PyTorch (the CoreML parity reference).

The CoreML artifact is converted from the float (rotated) model as an fp16 program; then
`ct.optimize.coreml.linear_quantize_weights` compresses its constants. Per part:
- transformer linears: int4, linear_symmetric, per_block 32 along the input dim. coremltools
  computes on the fp16 weights: scale = (max|w| - -max|w|) / (7 - -7) = max|w| / 7 per block
  (range [-7, 7], no -8), q = round-half-even(w / scale), stored scale fp16.
- lm_head and the embedding table: int8 linear_symmetric per output channel / per row
  (range [-127, 127]), fp16 scales.
- activations are not quantized (CoreML has no dynamic activation quantization): the
  device runs fp16 activations; the reference runs fp32 (see runtime/mil_interpreter.py).
- the online Hadamard factors (matmul constants) stay fp16, never quantized.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.config import LLMQuantConfig
from export.llm.model import Llama
from export.llm.quantize import untie_embeddings
from export.metrics import sqnr_db

BLOCK = 32
LINEAR_DTYPE, OUTPUT_DTYPE = "int4", "int8"


def coreml_symmetric_dequantized(w: torch.Tensor, bits: int, block: int | None) -> torch.Tensor:
    """w: [out, in] -> what the package dequantizes to (fp16 values, returned as fp32).

    block=None: one scale per output row; else blocks of `block` along the input dim."""
    w16 = w.detach().float().numpy().astype(np.float16)
    out_f, in_f = w16.shape
    b = in_f if block is None else block
    wb = w16.reshape(out_f, in_f // b, b)
    qmax = 2 ** (bits - 1) - 1
    max_abs = np.maximum(np.abs(wb.min(-1, keepdims=True)), np.abs(wb.max(-1, keepdims=True)))
    scale = (max_abs - (-max_abs)) / np.float16(2 * qmax)  # fp16 arithmetic, as coremltools on an fp16 program
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.round(wb / scale), -qmax, qmax)
    q = np.nan_to_num(q)
    # the program dequantizes to fp16 (q * scale rounded to fp16), then runs fp16
    return torch.from_numpy((q.astype(np.float16) * scale).astype(np.float32).reshape(out_f, in_f))


class CoreMLWeightLinear(nn.Module):
    """Eager stand-in: the package's dequantized weight, fp32 activations."""

    def __init__(self, linear: nn.Linear, bits: int, block: int | None):
        super().__init__()
        self.register_buffer("weight", coreml_symmetric_dequantized(linear.weight, bits, block))
        self.bias = None if linear.bias is None else linear.bias.detach().float()

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


def check_coreml_quant_config(cfg: LLMQuantConfig) -> None:
    from export.errors import HandheldError

    if cfg.weight_bits not in (4, 16) or (cfg.weight_bits == 4 and cfg.group_size != BLOCK) or cfg.kv_cache_bits:
        raise HandheldError(
            f"the CoreML backend stores 4-bit weights per block of {BLOCK} with an fp16 state cache; got {cfg}",
            f"use --weight-bits 4 --group-size {BLOCK} (or 16), no KV-cache quantization",
        )


def simulate_coreml_weights(model: Llama, cfg: LLMQuantConfig) -> dict:
    """Quantize `model` in place the way the CoreML package stores it; return weight SQNR per part."""
    cfg = cfg.for_backend("coreml")
    check_coreml_quant_config(cfg)
    if cfg.weight_bits == 16 and not cfg.embedding_bits and not cfg.output_bits:
        return {}
    untie_embeddings(model)
    report: dict[str, float] = {}
    if cfg.weight_bits == 4:
        errs = []
        for name, lin in model.linears().items():
            q = CoreMLWeightLinear(lin, 4, BLOCK)
            errs.append(sqnr_db(lin.weight.detach(), q.weight))
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, q)
        report["linear_weight_sqnr_db_min"] = min(errs)
        report["linear_weight_sqnr_db_mean"] = sum(errs) / len(errs)
    if cfg.output_bits:  # 8: per channel; 4: per block like the linears
        q = CoreMLWeightLinear(model.lm_head, cfg.output_bits, None if cfg.output_bits == 8 else BLOCK)
        report["lm_head_weight_sqnr_db"] = sqnr_db(model.lm_head.weight.detach(), q.weight)
        model.lm_head = q
    if cfg.embedding_bits == 8:
        table = model.embed_tokens.weight.detach()
        deq = coreml_symmetric_dequantized(table, 8, None)
        model.embed_tokens = nn.Embedding.from_pretrained(deq, freeze=True)
        report["embedding_sqnr_db"] = sqnr_db(table, deq)
    return report


def simulate_coreml_delegate_weights(model: Llama, block: int = BLOCK, threshold: int = 65536) -> Llama:
    """A copy of the float `model` with what the ExecuTorch CoreML delegate's global int4
    quantizer stores (export/backends/coreml.py DELEGATE_QUANT): every linear weight of >=
    `threshold` elements int4 per block along the input dim. The embedding table of the gather
    stays fp16 unless it is the very constant lm_head reads (tied), as read back from the package."""
    import copy

    model = copy.deepcopy(model)
    tied = model.lm_head.weight is model.embed_tokens.weight
    for name, lin in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        if lin.weight.numel() >= threshold:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, CoreMLWeightLinear(lin, 4, block))
    if tied and isinstance(model.lm_head, CoreMLWeightLinear):
        model.embed_tokens = nn.Embedding.from_pretrained(model.lm_head.weight.clone(), freeze=True)
    return model
