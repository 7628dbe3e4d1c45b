"""The ONNX export wrapper: ExecuTorch's (tokens, input_pos) contract, the KV cache as
fixed-size buffers passed in and out.

    tokens:          [1, S] int64, S >= 1 new tokens (prefill: the prompt; decode: 1)
    input_pos:       [1] int64, the position P of tokens[0, 0]
    past_key_{i}:    [1, n_kv_heads, max_seq_len, head_dim] fp32, layer i's key cache
    past_value_{i}:  the same for values
    ->
    logits:          [1, vocab] fp32, for the last position only
    present_key_{i}: the cache with positions P .. P + S - 1 written (same shape)
    present_value_{i}

Positions >= P + S are never read, so rewinding is just a smaller input_pos. The runner
(runtime/onnx_runner.py) binds each present_* output to its past_* buffer, so onnxruntime's
GroupQueryAttention writes the new keys in place (no cache copy, no allocation per step);
a caller that feeds plain arrays gets updated copies instead, with the same values.

The graph is laid out the way onnxruntime runs a decoder fastest (the layout of its own model
builder), from the model's own modules and weights: per block one SkipSimplifiedLayerNormalization
(residual add + RMSNorm), one MatMul for q|k|v, one GroupQueryAttention with RoPE inside, o_proj,
another skip-norm, one MatMul for gate|up, SiLU * up, the R4 Hadamard (two small MatMuls) and
down_proj; the custom ops are in `export/llm/onnx_ops.py`. The math is the model's: the test
suite checks the wrapper against `Llama.forward` and the artifact against the wrapper.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import export.llm.onnx_ops  # noqa: F401  (registers the torch.ops.handheld ops)
from export.llm.fused import GateUpMLP, fuse_linears
from export.llm.model import Attention, Llama, RMSNorm
from export.rotation.online import OnlineHadamard
from runtime.errors import HandheldError


def past_names(n_layers: int) -> list[str]:
    return [f"past_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


class DivRMSNorm(nn.Module):
    """RMSNorm written as x / sqrt(mean(x^2) + eps): the pattern onnxruntime fuses into one
    SimplifiedLayerNormalization kernel (the rsqrt form stays five ops per norm)."""

    def __init__(self, norm: RMSNorm):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps

    def forward(self, x):  # [..., dim]
        return self.weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class GQAttention(nn.Module):
    """The model's attention as q|k|v MatMul -> GroupQueryAttention (RoPE, past ++ new) -> o_proj."""

    def __init__(self, attn: Attention):
        super().__init__()
        if not all(isinstance(m, nn.Identity) for m in (attn.k_quant, attn.v_quant)):
            raise HandheldError("the ONNX decoder keeps an fp32 KV cache", "export with kv_cache_bits=0")
        if not isinstance(attn.qk_rotate, (nn.Identity, OnlineHadamard)):
            raise HandheldError(
                f"the ONNX decoder cannot carry a {type(attn.qk_rotate).__name__} on q and k",
                "use a Hadamard R3 or none",
            )
        # R3 (the same orthonormal Hadamard on q and k) leaves every q.k, so attention, unchanged:
        # it only matters for a quantized cache, which this fp32-cache graph does not have
        self.num_heads, self.kv_heads = attn.n_heads, attn.n_kv_heads
        self.qkv_proj = fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        self.o_proj = attn.o_proj

    def forward(self, x, past_k, past_v, lengths, rope):  # x: [1, S, dim]; rope: (cos, sin) [L, D / 2]
        out, present_k, present_v = torch.ops.handheld.gqa_rope(
            self.qkv_proj(x), past_k, past_v, *lengths, *rope, self.num_heads, self.kv_heads
        )
        return self.o_proj(out), present_k, present_v


class PastKVDecoder(nn.Module):
    """forward(tokens, *past) -> (logits, *present); see the module docstring."""

    def __init__(self, model: Llama, max_seq_len: int):
        super().__init__()
        model = copy.deepcopy(model)
        self.max_seq_len = max_seq_len
        # one RoPE table for every layer: a per-layer copy measured ~1.5% slower decode (cache
        # traffic); cos/sin repeat across the head's two halves (model.rope_cos = cat(f, f))
        half = model.args.head_dim // 2
        self.register_buffer("cos_cache", model.rope_cos[:max_seq_len, :half].contiguous(), persistent=False)
        self.register_buffer("sin_cache", model.rope_sin[:max_seq_len, :half].contiguous(), persistent=False)
        for layer in model.layers:
            layer.self_attn = GQAttention(layer.self_attn)
            layer.mlp = GateUpMLP(layer.mlp)
        del model.rope_cos, model.rope_sin
        self.first_norm = DivRMSNorm(model.layers[0].input_layernorm)
        self.model = model

    @property
    def n_layers(self) -> int:
        return self.model.args.n_layers

    def hidden_last(self, x: torch.Tensor, input_pos: torch.Tensor, cache) -> tuple[torch.Tensor, list]:
        """x: [1, S, dim] embeddings at positions input_pos.. -> the final-normed hidden state of
        the last position [1, 1, dim], the updated caches."""
        lengths = torch.ops.handheld.gqa_lengths(input_pos, x)  # shared by every attention node
        rope, layers = (self.cos_cache, self.sin_cache), self.model.layers
        normed, present = self.first_norm(x), []
        for i, layer in enumerate(layers):
            delta, k, v = layer.self_attn(normed, cache[2 * i], cache[2 * i + 1], lengths, rope)
            present += [k, v]
            normed, x = torch.ops.handheld.skip_rms_norm(
                x, delta, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.eps
            )
            delta = layer.mlp(normed)
            nxt = layers[i + 1].input_layernorm if i + 1 < len(layers) else None
            if nxt is not None:
                normed, x = torch.ops.handheld.skip_rms_norm(x, delta, nxt.weight, nxt.eps)
        final = self.model.norm
        h, _ = torch.ops.handheld.skip_rms_norm(x[:, -1:], delta[:, -1:], final.weight, final.eps)
        return h, present

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor, *cache: torch.Tensor):
        h, present = self.hidden_last(self.model.embed_tokens(tokens), input_pos, cache)
        # 3-D input so lm_head exports as MatMul (what MatMulNBits replaces), not Gemm
        return (self.model.lm_head(h)[:, 0], *present)  # logits [1, vocab]

    def empty_cache(self) -> list[torch.Tensor]:
        a = self.model.args
        return [torch.zeros(1, a.n_kv_heads, self.max_seq_len, a.head_dim) for _ in range(2 * a.n_layers)]

    def example_inputs(self, seq_len: int = 3, pos: int = 5) -> tuple:
        return (torch.zeros(1, seq_len, dtype=torch.long), torch.tensor([pos]), *self.empty_cache())

    def dynamic_shapes(self):
        seq = torch.export.Dim("seq", min=1, max=self.max_seq_len - 1)
        return ({1: seq}, {}, tuple({} for _ in range(2 * self.n_layers)))  # (tokens, input_pos, *cache): only S varies

    def input_names(self) -> list[str]:
        return ["tokens", "input_pos", *past_names(self.n_layers)]

    def output_names(self) -> list[str]:
        return ["logits", *present_names(self.n_layers)]
