"""What coremltools' weight quantization stores, simulated in eager PyTorch (the CoreML parity reference).

The CoreML artifact is converted from the float (rotated) model as an fp16 program; then
`ct.optimize.coreml.linear_quantize_weights` compresses its constants. Per part:
- transformer linears: int4, linear_symmetric, per_block 32 along the input dim. coremltools
  computes on the fp16 weights: scale = (max|w| - -max|w|) / (7 - -7) = max|w| / 7 per block
  (range [-7, 7], no -8), q = round-half-even(w / scale), stored scale fp16. With GPTQ (the
  default `weight_method`) the integers are GPTQ's on those same fp16 scales (range [-8, 7]),
  handed to the converter as compression metadata on each linear (`gptq_compression`), which
  stores them as they are instead of re-rounding.
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


def coreml_symmetric_scales(w: torch.Tensor, bits: int, block: int | None) -> np.ndarray:
    """w: [out, in] -> coremltools' linear_symmetric fp16 scales [out, in // block, 1]
    (block=None: one per output row), computed in fp16 as it does on an fp16 program."""
    w16 = w.detach().float().numpy().astype(np.float16)
    out_f, in_f = w16.shape
    wb = w16.reshape(out_f, in_f // (block or in_f), block or in_f)
    max_abs = np.maximum(np.abs(wb.min(-1, keepdims=True)), np.abs(wb.max(-1, keepdims=True)))
    return (max_abs - (-max_abs)) / np.float16(2 * (2 ** (bits - 1) - 1))


def _dequantized(q: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """The program dequantizes to fp16 (q * scale rounded to fp16), then runs fp16."""
    return torch.from_numpy((q.astype(np.float16) * scale).astype(np.float32).reshape(q.shape[0], -1))


def coreml_symmetric_dequantized(w: torch.Tensor, bits: int, block: int | None) -> torch.Tensor:
    """w: [out, in] -> what the package dequantizes to (fp16 values, returned as fp32).

    block=None: one scale per output row; else blocks of `block` along the input dim."""
    scale = coreml_symmetric_scales(w, bits, block)
    wb = w.detach().float().numpy().astype(np.float16).reshape(*scale.shape[:2], -1)
    qmax = 2 ** (bits - 1) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.nan_to_num(np.clip(np.round(wb / scale), -qmax, qmax))
    return _dequantized(q, scale)


class CoreMLWeightLinear(nn.Module):
    """Eager stand-in: the package's dequantized weight, fp32 activations. With `integers`
    ([out, in] GPTQ integers on the RTN scales), those are what the package stores."""

    def __init__(self, linear: nn.Linear, bits: int, block: int | None, integers: torch.Tensor | None = None):
        super().__init__()
        self.bits, self.block = bits, block
        if integers is None:
            self.register_buffer("weight", coreml_symmetric_dequantized(linear.weight, bits, block))
            self.integers = self.scales = None
        else:
            scale = coreml_symmetric_scales(linear.weight, bits, block)
            self.integers, self.scales = integers.to(torch.int8), torch.from_numpy(scale[..., 0].astype(np.float32))
            self.register_buffer("weight", _dequantized(integers.numpy().reshape(*scale.shape[:2], -1), scale))
        self.bias = None if linear.bias is None else linear.bias.detach().float()

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


def gptq_coreml_integers(model: Llama, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """GPTQ integers [out, in] in [-8, 7] of every block linear on coremltools' own int4
    per-block fp16 scales, so the package can store exactly these."""
    from export.quant import QuantScheme
    from export.quant.gptq import gptq_weights

    scales = {}
    for name, lin in model.linears().items():
        s = torch.from_numpy(coreml_symmetric_scales(lin.weight, 4, BLOCK).astype(np.float64))  # [out, in/B, 1]
        scales[name] = s.expand(-1, -1, BLOCK).reshape(lin.weight.shape)
    scheme = QuantScheme("coreml-int4", w_bits=4, w_group=BLOCK, w_clip_search=False)
    weights = gptq_weights(model, calibration, scheme, scales=scales)
    # an all-zero block has scale 0: its integers are 0
    return {
        name: torch.where(scales[name] > 0, w.double() / scales[name].clamp_min(1e-30), 0.0)
        .round()
        .clamp(-8, 7)
        .to(torch.int8)
        for name, w in weights.items()
    }


def gptq_compression(float_model: Llama, simulated: Llama) -> Llama:
    """`float_model` (in place) with each block linear carrying the simulated model's GPTQ
    integers: weight = their fp16 dequantization, plus coremltools' compression metadata
    (`_COREML_/weight/...` buffers), so the converter stores those integers and scales as
    constexpr_blockwise_shift_scale without re-rounding. Linears without integers are left."""
    simulated_modules = dict(simulated.named_modules())
    for name, lin in float_model.linears().items():
        q = simulated_modules.get(name)
        if getattr(q, "integers", None) is None:
            continue
        lin.weight = nn.Parameter(q.weight.clone(), requires_grad=False)
        lin.register_buffer("_COREML_/weight/quantization_n_bits", torch.tensor(4))
        # [out, in / block]; a zero scale (all-zero block, integers 0) becomes 1: same zeros, no 0/0 in the converter
        lin.register_buffer(
            "_COREML_/weight/quantization_scale", torch.where(q.scales > 0, q.scales, torch.ones_like(q.scales))
        )
        lin.register_buffer("_COREML_/weight/compression_type", torch.tensor([3]))  # quantization
    return float_model


def check_coreml_quant_config(cfg: LLMQuantConfig) -> None:
    from runtime.errors import HandheldError

    if cfg.weight_bits not in (4, 16) or (cfg.weight_bits == 4 and cfg.group_size != BLOCK) or cfg.kv_cache_bits:
        raise HandheldError(
            f"the CoreML backend stores 4-bit weights per block of {BLOCK} with an fp16 state cache; got {cfg}",
            f"use --weight-bits 4 --group-size {BLOCK} (or 16), no KV-cache quantization",
        )


def simulate_coreml_weights(model: Llama, cfg: LLMQuantConfig, calibration: torch.Tensor | None = None) -> dict:
    """Quantize `model` in place the way the CoreML package stores it; return weight SQNR per part.
    With `cfg.weight_method == "gptq"`, `calibration` ([n, S] tokens) feeds GPTQ."""
    cfg = cfg.for_backend("coreml")
    check_coreml_quant_config(cfg)
    if cfg.weight_bits == 16 and not cfg.embedding_bits and not cfg.output_bits:
        return {}
    untie_embeddings(model)
    report: dict = {}
    if cfg.weight_bits == 4:
        gptq = None
        if cfg.weight_method == "gptq":
            if calibration is None:
                from runtime.errors import HandheldError

                raise HandheldError(
                    "GPTQ needs calibration tokens", "pass calibration windows, or use weight_method='rtn'"
                )
            gptq = gptq_coreml_integers(model, calibration)
        report["weight_method"] = cfg.weight_method
        errs = []
        for name, lin in model.linears().items():
            q = CoreMLWeightLinear(lin, 4, BLOCK, None if gptq is None else gptq[name])
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
    quantizer stores (export/llm/lower_coreml.py DELEGATE_QUANT): every linear weight of more than
    `threshold` elements (coremltools' rule) int4 per block along the input dim. The embedding table of the gather
    stays fp16 unless it is the very constant lm_head reads (tied), as read back from the package."""
    import copy

    model = copy.deepcopy(model)
    tied = model.lm_head.weight is model.embed_tokens.weight
    for name, lin in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        if lin.weight.numel() > threshold:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, CoreMLWeightLinear(lin, 4, block))
    if tied and isinstance(model.lm_head, CoreMLWeightLinear):
        model.embed_tokens = nn.Embedding.from_pretrained(model.lm_head.weight.clone(), freeze=True)
    return model
