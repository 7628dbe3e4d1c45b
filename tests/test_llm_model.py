"""Handheld's own decoder against transformers' reference implementations."""

import pytest
import torch

from export.llm.model import Llama


def _hf_tiny(model_type: str, **extra):
    import transformers

    cfg_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[model_type]
    cfg = cfg_cls(
        vocab_size=133,
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=160,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        **extra,
    )
    torch.manual_seed(1)
    model_cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}[model_type]
    hf = model_cls(cfg).eval()
    for p in hf.parameters():
        p.data.normal_(0, 0.2)
    return cfg, hf


@pytest.mark.parametrize(
    "model_type,extra",
    [
        ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 5000.0}}),
        (
            "llama",
            {
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 500000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64,
                }
            },
        ),
        ("qwen2", {}),
    ],
    ids=["llama", "llama3-rope-scaling", "qwen2-qkv-bias"],
)
def test_matches_transformers_on_tiny_random_models(model_type, extra):
    from export.llm.checkpoint import LLM_FAMILIES

    cfg, hf = _hf_tiny(model_type, **extra)
    ours = Llama(LLM_FAMILIES.get(model_type)(cfg)).eval()
    missing, unexpected = ours.load_state_dict(
        {k.removeprefix("model."): v for k, v in hf.state_dict().items()}, strict=False
    )
    assert not missing and not unexpected
    tokens = torch.randint(0, 133, (2, 37))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_matches_transformers_on_real_smollm2(smollm2):
    from transformers import AutoModelForCausalLM

    from export.llm.checkpoint import demo_checkpoint

    path = demo_checkpoint()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = smollm2.tokenizer("The Eiffel Tower is located in the city of", return_tensors="pt").input_ids
    with torch.no_grad():
        ours, ref = smollm2.model(ids), hf(ids).logits
    assert (ours - ref).abs().max() < 1e-3  # logits are O(30): fp32 noise only
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


def test_smollm2_architecture_is_read_from_the_checkpoint(smollm2):
    a = smollm2.model.args
    assert (a.n_layers, a.dim, a.n_heads, a.n_kv_heads, a.head_dim, a.ffn_dim, a.vocab_size) == (
        30,
        576,
        9,
        3,
        64,
        1536,
        49152,
    )
    assert a.tie_embeddings and a.rope_theta == 100000.0
    assert smollm2.eos_ids and smollm2.chat_template


def test_cached_decoder_matches_full_sequence_forward(tiny_llama):
    from export.llm.wrapper import CachedDecoder

    wrapper = CachedDecoder(tiny_llama, max_seq_len=48)
    tokens = torch.randint(0, 133, (1, 20))
    full = tiny_llama(tokens)[0]  # [20, vocab]
    with torch.no_grad():
        prefill = wrapper(tokens[:, :13], torch.tensor([0]))
        torch.testing.assert_close(prefill[0], full[12], atol=1e-4, rtol=1e-4)
        for pos in range(13, 20):
            step = wrapper(tokens[:, pos : pos + 1], torch.tensor([pos]))
            torch.testing.assert_close(step[0], full[pos], atol=1e-4, rtol=1e-4)


def test_unknown_architecture_is_a_clear_error():
    from export.llm.checkpoint import LLM_FAMILIES
    from runtime.errors import HandheldError

    with pytest.raises(HandheldError, match="(?s)unknown LLM architecture 'gpt2'.*llama"):
        LLM_FAMILIES.get("gpt2")


def test_int8_kv_cache_attention_is_int8_per_token_q_k_v_then_fp32_attention():
    """ExecuTorch's quantized cache ops (update_cache of int8 values, scales and zero points;
    custom_quantized_sdpa) compute exactly `simulate_int8_kv_attention`: q, k, v quantized per
    token and head (asymmetric int8), causal attention over the dequantized values, GQA."""
    from export.llm.wrapper import Int8KVCacheSDPA, simulate_int8_kv_attention

    torch.manual_seed(0)
    sdpa = Int8KVCacheSDPA(n_kv_heads=3, head_dim=20, max_seq_len=37)
    keys, values, pos = [], [], 0
    for s in (11, 1, 1, 5, 1):  # prefill, decode, a second prefill chunk
        q, k, v = torch.randn(1, s, 9, 20), torch.randn(1, s, 3, 20) * 4, torch.randn(1, s, 3, 20)
        keys.append(k)
        values.append(v)
        got = sdpa(q, k, v, pos)
        want = simulate_int8_kv_attention(q, torch.cat(keys, 1), torch.cat(values, 1), pos)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        float_attention = torch.ops.llama.custom_sdpa(q, torch.cat(keys, 1), torch.cat(values, 1), pos, None, 0.0, True)
        assert 0 < (got - float_attention).abs().max() < 0.1  # quantized, not skipped
        pos += s
    assert sdpa.k_cache.dtype == torch.int8 and sdpa.k_scales.shape == (1, 37, 3, 1)


def test_cached_decoder_with_an_int8_cache_stays_close_to_the_float_cache(tiny_llama):
    from export.llm.wrapper import CachedDecoder, kv_cache_mb

    float_cache, int8_cache = CachedDecoder(tiny_llama, 48), CachedDecoder(tiny_llama, 48, kv_cache_bits=8)
    tokens = torch.randint(0, 133, (1, 20))
    with torch.no_grad():
        a, b = float_cache(tokens[:, :13], torch.tensor([0])), int8_cache(tokens[:, :13], torch.tensor([0]))
        for pos in range(13, 20):
            a = torch.cat([a, float_cache(tokens[:, pos : pos + 1], torch.tensor([pos]))])
            b = torch.cat([b, int8_cache(tokens[:, pos : pos + 1], torch.tensor([pos]))])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cos.min() > 0.99 and not torch.equal(a, b), cos
    args = tiny_llama.args
    assert kv_cache_mb(args, 48, "fp32") == 2 * args.n_layers * 48 * args.n_kv_heads * args.head_dim * 4 / 2**20
    assert kv_cache_mb(args, 48, "int8") / kv_cache_mb(args, 48, "fp32") == (args.head_dim + 5) / (4 * args.head_dim)


def test_fused_projections_compute_what_the_separate_linears_did(tiny_llama):
    """q|k|v and gate|up as one linear each, on torchao 8da4w weights (integers, scales, zero
    points joined row-wise; one dynamic activation quantization): the same logits as the
    separate linears, and fewer, wider GEMMs."""
    import copy

    from export.config import LLMQuantConfig
    from export.llm.fused import GateUpMLP, QKVAttention, concat_rows, fuse_projections
    from export.llm.quantize import quantize_llm

    model = copy.deepcopy(tiny_llama)
    quantize_llm(model, LLMQuantConfig(weight_method="rtn"))
    fused = copy.deepcopy(model)
    assert fuse_projections(fused) == 2 * model.args.n_layers
    assert all(type(layer.self_attn) is QKVAttention and type(layer.mlp) is GateUpMLP for layer in fused.layers)
    qkv = fused.layers[0].self_attn.qkv_proj.weight
    assert qkv.shape == (model.args.dim + 2 * model.args.n_kv_heads * model.args.head_dim, model.args.dim)
    tokens = torch.randint(0, 133, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(fused(tokens), model(tokens), atol=1e-5, rtol=1e-5)
    w = model.layers[0].self_attn.q_proj.weight
    with pytest.raises(ValueError, match="one weight format"):
        concat_rows([w, torch.zeros(3, w.shape[1])])
