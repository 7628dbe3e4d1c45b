"""Per-family adapters: which linears of a decoder receive R1, R2 and R4, and where the online
Hadamards go. The rotation math (`fuse.py`, `rotate.py`) never sees a layer name.

An adapter is a function model -> `DecoderSlots`, registered under the model class name.
Every checkpoint family Handheld loads (llama, mistral, qwen2; see `LLM_FAMILIES`) becomes
the same `export.llm.model.Llama`, so one adapter covers them; a new decoder class adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from runtime.registry import Registry


@dataclass
class LayerSlots:
    """One transformer block, in the roles the rotations give its modules."""

    attn_norm: nn.Module  # RMSNorm whose gamma folds into `attn_inputs`
    attn_inputs: list[nn.Linear]  # read the residual stream: x R1 (q, k, v)
    mlp_norm: nn.Module
    mlp_inputs: list[nn.Linear]  # gate, up
    outputs: list[nn.Linear]  # write the residual stream: R1^T (o, down)
    values: nn.Linear  # v_proj: R2 on each kv head's output
    attn_out: nn.Linear  # o_proj: R2 on each head's input
    down: nn.Linear  # down_proj: R4 folded into its input
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    set_qk_rotate: Callable[[nn.Module], None]  # R3 slot (q and k after RoPE)
    set_down_rotate: Callable[[nn.Module], None]  # R4 slot (down_proj input)
    set_kv_quant: Callable[[nn.Module, nn.Module], None]  # (k_quant, v_quant) slots


@dataclass
class DecoderSlots:
    embedding: nn.Embedding
    final_norm: nn.Module
    head: nn.Linear
    layers: list[LayerSlots]
    dim: int
    untie: Callable[[], None]  # give `head` its own weight when tied to the embedding


ADAPTERS: Registry[Callable[[nn.Module], DecoderSlots]] = Registry("architecture for rotation")


def slots_for(model: nn.Module) -> DecoderSlots:
    return ADAPTERS.get(type(model).__name__)(model)


def _setter(module: nn.Module, *names: str) -> Callable:
    def set_(*values):
        for name, value in zip(names, values):
            setattr(module, name, value)

    return set_


@ADAPTERS.register("Llama")
def llama_slots(model) -> DecoderSlots:
    a = model.args
    layers = []
    for blk in model.layers:
        att, mlp = blk.self_attn, blk.mlp
        layers.append(
            LayerSlots(
                attn_norm=blk.input_layernorm,
                attn_inputs=[att.q_proj, att.k_proj, att.v_proj],
                mlp_norm=blk.post_attention_layernorm,
                mlp_inputs=[mlp.gate_proj, mlp.up_proj],
                outputs=[att.o_proj, mlp.down_proj],
                values=att.v_proj,
                attn_out=att.o_proj,
                down=mlp.down_proj,
                n_heads=a.n_heads,
                n_kv_heads=a.n_kv_heads,
                head_dim=a.head_dim,
                ffn_dim=a.ffn_dim,
                set_qk_rotate=_setter(att, "qk_rotate"),
                set_down_rotate=_setter(mlp, "down_rotate"),
                set_kv_quant=_setter(att, "k_quant", "v_quant"),
            )
        )

    def untie():
        if model.lm_head.weight is model.embed_tokens.weight:
            model.lm_head.weight = nn.Parameter(model.embed_tokens.weight.detach().clone(), requires_grad=False)

    return DecoderSlots(model.embed_tokens, model.norm, model.lm_head, layers, a.dim, untie)
