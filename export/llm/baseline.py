"""The speed anchor: the same checkpoint exported by ExecuTorch's own `export_llm`.

ExecuTorch's exporter ships in the wheel. It reads Meta-layout checkpoints, so the
decoder's weights are renamed (HF q/k layout kept, with `use_hf_rope`), then exported with
the same quantization where its options allow: 8da4w group-32 linears, int8 per-row
embedding, static KV cache with dynamic-shape prefill and custom SDPA. One difference is
ExecuTorch's own choice: its 8da4w also makes the output layer 4-bit (Handheld's is int8).
On 2 cores the export takes about 13 minutes (mostly XNNPACK lowering).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from export.llm.checkpoint import load_checkpoint
from runtime.errors import HandheldError

_META_NAMES = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def meta_state_dict(model) -> dict[str, torch.Tensor]:
    sd = {
        "tok_embeddings.weight": model.embed_tokens.weight,
        "norm.weight": model.norm.weight,
        "output.weight": model.lm_head.weight,
    }
    for i, layer in enumerate(model.layers):
        for name, tensor in layer.state_dict().items():
            if name in _META_NAMES:
                sd[f"layers.{i}.{_META_NAMES[name]}"] = tensor
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def build_executorch_baseline(
    out_pte: Path, checkpoint: str | None = None, max_seq_len: int = 512, group_size: int = 32, kv_cache_bits: int = 0
) -> Path:
    """kv_cache_bits 8: export_llm's own `quantize_kv_cache` (int8 per-token cache, quantized SDPA)."""
    ck = load_checkpoint(checkpoint)
    a = ck.model.args
    if a.qkv_bias or a.rope_scaling:
        raise HandheldError(
            "the ExecuTorch baseline builder handles plain Llama checkpoints only", "benchmark without --baseline"
        )
    params = {
        "dim": a.dim,
        "n_layers": a.n_layers,
        "n_heads": a.n_heads,
        "n_kv_heads": a.n_kv_heads,
        "head_dim": a.head_dim,
        "hidden_dim": a.ffn_dim,
        "vocab_size": a.vocab_size,
        "norm_eps": a.norm_eps,
        "rope_theta": a.rope_theta,
        "use_scaled_rope": False,
        "use_hf_rope": True,
    }
    out_pte = Path(out_pte).resolve()
    out_pte.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(meta_state_dict(ck.model), f"{tmp}/checkpoint.pth")
        Path(f"{tmp}/params.json").write_text(json.dumps(params))
        metadata = json.dumps({"get_bos_id": ck.bos_id, "get_eos_ids": list(ck.eos_ids)})
        cmd = [
            sys.executable,
            "-m",
            "executorch.extension.llm.export.export_llm",
            "base.model_class=llama3",
            f"base.checkpoint={tmp}/checkpoint.pth",
            f"base.params={tmp}/params.json",
            f"base.metadata='{metadata}'",
            "model.use_kv_cache=True",
            "model.use_sdpa_with_kv_cache=True",
            f"model.quantize_kv_cache={kv_cache_bits == 8}",
            "model.enable_dynamic_shape=True",
            "model.dtype_override=fp32",
            "quantization.qmode=8da4w",
            f"quantization.group_size={group_size}",
            "quantization.embedding_quantize='8,0'",
            "backend.xnnpack.enabled=True",
            "backend.xnnpack.extended_ops=True",
            f"export.max_seq_length={max_seq_len}",
            f"export.max_context_length={max_seq_len}",
            f"export.output_dir={out_pte.parent}",
            f"export.output_name={out_pte.name}",
        ]
        print("building ExecuTorch's own export_llm baseline (about 13 min on 2 cores) ...", flush=True)
        # export_llm writes output_name relative to its working directory
        proc = subprocess.run(cmd, cwd=out_pte.parent)
    if proc.returncode != 0 or not out_pte.is_file():
        raise HandheldError(f"ExecuTorch's export_llm failed (exit {proc.returncode})", "see its log above")
    return out_pte
