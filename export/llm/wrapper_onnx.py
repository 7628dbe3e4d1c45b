"""The ONNX export wrapper: the KV cache as explicit past/present tensors, dynamic lengths.

    tokens:          [1, S] int64, S >= 1 new tokens (prefill: the prompt; decode: 1)
    past_key_{i}:    [1, n_kv_heads, P, head_dim] fp32, P >= 0 cached positions of layer i
    past_value_{i}:  [1, n_kv_heads, P, head_dim]
    ->
    logits:          [1, vocab] fp32, for the last position only
    present_key_{i}: [1, n_kv_heads, P + S, head_dim]  (past ++ new, what the next call gets)
    present_value_{i}

The position of tokens[0, 0] is P (the past length), so no position input is needed: the
runner (runtime/onnx_runner.py) truncates its past to `input_pos` and so presents the same
`forward(tokens, input_pos) -> logits` contract as the ExecuTorch artifact. Attention is one
onnxruntime GroupQueryAttention node per layer (`export/llm/onnx_attention.py`); the model
file is untouched: a `PastKVSDPA` module goes into each `Attention.sdpa` slot, the wrapper
hands it its past and collects its present.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import export.llm.onnx_attention  # noqa: F401  (registers torch.ops.handheld.gqa)
from export.llm.model import Llama, RMSNorm


def past_names(n_layers: int) -> list[str]:
    return [f"past_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


class PastKVSDPA(nn.Module):
    """Causal GQA attention over past ++ new keys; slots into `Attention.sdpa`.

    The wrapper sets `past` (k, v: [1, Hkv, P, D]) before each call and reads `present`."""

    def __init__(self):
        super().__init__()
        self.past: tuple[torch.Tensor, torch.Tensor] | None = None
        self.present: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, q, k, v, start_pos):  # q: [1, S, H, D]; k, v: [1, S, Hkv, D]
        past_k, past_v = self.past
        b, s, h, d = q.shape
        hkv = k.shape[2]
        out, *self.present = torch.ops.handheld.gqa(q.reshape(b, s, h * d), k.reshape(b, s, hkv * d), v.reshape(b, s, hkv * d), past_k, past_v, h, hkv)
        return out.view(b, s, h, d)


class DivRMSNorm(nn.Module):
    """RMSNorm written as x / sqrt(mean(x^2) + eps): the pattern onnxruntime fuses into one
    SimplifiedLayerNormalization kernel (the rsqrt form stays five ops per norm)."""

    def __init__(self, norm: RMSNorm):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps

    def forward(self, x):  # [..., dim]
        return self.weight * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def fusable_norms(model: nn.Module) -> nn.Module:
    """Swap every RMSNorm for DivRMSNorm in place (the same function)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, RMSNorm):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, DivRMSNorm(module))
    return model


class SharedInputLinears(nn.Module):
    """Linears that read the same input (q/k/v; gate/up) computed as one: one MatMulNBits call
    instead of three/two. MatMulNBits' blocks run along the input dim, so every output column
    quantizes exactly as it would in its own linear (the simulation stays per-linear)."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        biases = [l.bias for l in linears]
        self.fused = nn.Linear(linears[0].in_features, sum(l.out_features for l in linears), bias=biases[0] is not None)
        self.fused.weight = nn.Parameter(torch.cat([l.weight.detach() for l in linears]), requires_grad=False)
        if biases[0] is not None:
            self.fused.bias = nn.Parameter(torch.cat([b.detach() for b in biases]), requires_grad=False)
        self.sizes = [l.out_features for l in linears]
        self._x, self._parts = None, None

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if x is not self._x:  # the first of the group computes all; the others reuse it
            self._x, self._parts = x, self.fused(x).split(self.sizes, dim=-1)
        return self._parts[index]

    def clear(self) -> None:
        self._x = self._parts = None


class LinearPart(nn.Module):
    """Stands in for one of a SharedInputLinears group (same call signature as the linear)."""

    def __init__(self, shared: SharedInputLinears, index: int):
        super().__init__()
        self._shared, self.index = [shared], index  # a list: not registered twice

    def forward(self, x):
        return self._shared[0].part(x, self.index)


def share_input_linears(model: Llama) -> list[SharedInputLinears]:
    """q/k/v and gate/up of every block become one fused linear each (in place)."""
    groups = []
    for layer in model.layers:
        for parent, names, attr in ((layer.self_attn, ("q_proj", "k_proj", "v_proj"), "qkv_proj"), (layer.mlp, ("gate_proj", "up_proj"), "gate_up_proj")):
            shared = SharedInputLinears([getattr(parent, n) for n in names])
            setattr(parent, attr, shared)
            for i, n in enumerate(names):
                setattr(parent, n, LinearPart(shared, i))
            groups.append(shared)
    return groups


class PastKVDecoder(nn.Module):
    """forward(tokens, *past) -> (logits, *present); see the module docstring."""

    def __init__(self, model: Llama, max_seq_len: int):
        super().__init__()
        model = copy.deepcopy(model)
        self.max_seq_len = max_seq_len
        self.sdpas = [PastKVSDPA() for _ in model.layers]
        for layer, sdpa in zip(model.layers, self.sdpas):
            layer.self_attn.sdpa = sdpa
        model.rope_cos = model.rope_cos[:max_seq_len].clone()  # [max_seq_len, head_dim]
        model.rope_sin = model.rope_sin[:max_seq_len].clone()
        self.model = fusable_norms(model)
        self.shared = share_input_linears(model) if all(isinstance(l, nn.Linear) for l in model.linears().values()) else []

    @property
    def n_layers(self) -> int:
        return self.model.args.n_layers

    def forward(self, tokens: torch.Tensor, *past: torch.Tensor):
        start = past[0].shape[2]
        torch._check(start + tokens.shape[1] <= self.max_seq_len)
        for i, sdpa in enumerate(self.sdpas):
            sdpa.past = (past[2 * i], past[2 * i + 1])
        h = self.model.hidden(tokens, start)  # [1, S, dim]
        # 3-D input so lm_head exports as MatMul (what MatMulNBits replaces), not Gemm
        logits = self.model.lm_head(h[:, -1:, :])[:, 0]  # [1, vocab]
        present = [t for sdpa in self.sdpas for t in sdpa.present]
        for sdpa in self.sdpas:
            sdpa.past = sdpa.present = None
        for group in self.shared:
            group.clear()
        return (logits, *present)

    def empty_past(self, length: int = 0) -> list[torch.Tensor]:
        a = self.model.args
        return [torch.zeros(1, a.n_kv_heads, length, a.head_dim) for _ in range(2 * a.n_layers)]

    def example_inputs(self, seq_len: int = 3, past_len: int = 5) -> tuple:
        return (torch.zeros(1, seq_len, dtype=torch.long), *self.empty_past(past_len))

    def dynamic_shapes(self):
        seq = torch.export.Dim("seq", min=1, max=self.max_seq_len)
        past = torch.export.Dim("past", min=0, max=self.max_seq_len - 1)
        return ({1: seq}, tuple({2: past} for _ in range(2 * self.n_layers)))  # (tokens, *past)

    def input_names(self) -> list[str]:
        return ["tokens", *past_names(self.n_layers)]

    def output_names(self) -> list[str]:
        return ["logits", *present_names(self.n_layers)]
