"""Turn a float Llama into its simulated-quantization twin for one `QuantScheme`:
block linears get RTN (or given) weights and fake-quantized inputs, K/V get per-head fake
quantization. Embedding and lm_head stay in float, as in SpinQuant's and QuaRot's tables.

Activation quantization is a forward pre-hook (the model code stays untouched); this twin
is for measurement and learning, not for export.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from export.quant import QuantScheme
from export.quant.fake import ActQuant, quantize_weight_rtn
from export.rotation.adapter import slots_for

# (name, linear) -> quantized weight of the same shape
WeightQuantizer = Callable[[str, nn.Linear], torch.Tensor]


def quantize_inputs(linear: nn.Module, act: nn.Module) -> None:
    """Fake-quantize the input of `linear` on every call."""
    linear.register_forward_pre_hook(lambda _mod, args: (act(args[0]), *args[1:]))


def rtn_weights(scheme: QuantScheme) -> WeightQuantizer:
    return lambda _name, lin: quantize_weight_rtn(
        lin.weight.detach(), scheme.w_bits, scheme.w_group, scheme.w_clip_search
    )[0]


def fake_quantize_model(
    model, scheme: QuantScheme, weights: WeightQuantizer | None = None, quantize_weights: bool = True
):
    """In place; returns the model. `weights` defaults to RTN with the scheme's settings."""
    weights = weights or rtn_weights(scheme)
    for name, lin in model.linears().items():
        if quantize_weights and scheme.w_bits < 16:
            lin.weight.data = weights(name, lin)
        if scheme.a_bits < 16:
            quantize_inputs(lin, ActQuant(scheme.a_bits))
    if scheme.quantized_kv:
        for layer in slots_for(model).layers:
            layer.set_kv_quant(ActQuant(scheme.kv_bits), ActQuant(scheme.kv_bits))
    return model
