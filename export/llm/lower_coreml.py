"""The LLM on CoreML: float decoder -> torch.export -> iOS 18 mlprogram (stateful KV cache) -> 4-bit weights.

- `StatefulDecoder` (export/llm/wrapper_coreml.py) keeps the KV cache in two buffers that
  coremltools turns into `ct.StateType` states (read_state / slice_update / coreml_update_state).
- fp16 program (what iPhones run); tokens/mask inputs with RangeDim sequence lengths.
- `linear_quantize_weights`: transformer linears int4 per-block 32 (linear_symmetric), lm_head
  and the embedding table int8 per channel; every other constant (RoPE tables, the online
  Hadamard factors of R4/R3, which stay matmul ops) is left fp16.
- The ExecuTorch CoreML-delegate variant of the same decoder (`DELEGATE_FILE`).
See export/llm/quant_coreml.py for the numbers and their eager simulation; the generic CoreML
tools are export/backends/coreml.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from export.backends.coreml import (
    STATEFUL_TARGET,
    compress_weights,
    convert_program,
    lower_coreml_delegate,
    program_summary,
)
from export.backends.executorch import Method
from export.llm.quant_coreml import BLOCK
from export.progress import tqdm
from runtime.errors import HandheldError, error_line

if TYPE_CHECKING:
    import coremltools as ct

DEPLOYMENT_TARGET = STATEFUL_TARGET


def convert_decoder(decoder) -> ct.models.MLModel:
    """StatefulDecoder (tokens in) or LongVU's StatefulEmbedsDecoder (embeddings in) -> fp16
    mlprogram with states (not yet compressed)."""
    import coremltools as ct

    a = decoder.model.args
    n = decoder.max_seq_len - 1
    seq, total = ct.RangeDim(1, n, default=1, symbol="seq"), ct.RangeDim(1, n, default=1, symbol="total")
    first_name = next(iter(decoder.dynamic_shapes()))  # "tokens" [1, S] or "embeds" [1, S, dim]
    first = decoder.example_inputs()[0]
    first_type = ct.TensorType(
        name=first_name, shape=(1, seq, *first.shape[2:]), dtype=np.float32 if first.is_floating_point() else np.int32
    )
    cache = (a.n_layers, a.n_kv_heads, decoder.max_seq_len, a.head_dim)
    return convert_program(
        decoder,
        decoder.example_inputs(),
        decoder.dynamic_shapes(),
        inputs=[first_type, ct.TensorType(name="causal_mask", shape=(1, 1, seq, total), dtype=np.float32)],
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
        states=[
            ct.StateType(wrapped_type=ct.TensorType(shape=cache, dtype=np.float16), name=name)
            for name in ("key_cache", "value_cache")
        ],
    )


def _weight_consts(program, vocab: int) -> dict[str, list[str]]:
    """Const names by role: transformer-linear weights, lm_head weight, embedding table."""
    roles: dict[str, list[str]] = {"linear": [], "lm_head": [], "embedding": []}
    for op in program.functions["main"].operations:
        if op.op_type == "linear" and op.weight.op is not None and op.weight.op.op_type == "const":
            shape = tuple(op.weight.shape)
            roles["lm_head" if shape[0] == vocab else "linear"].append(op.weight.op.name)
        elif op.op_type == "gather" and op.x.op is not None and op.x.op.op_type == "const" and op.x.shape[0] == vocab:
            roles["embedding"].append(op.x.op.name)
    return roles


def quantize_weights(mlmodel, vocab: int, weight_bits: int, output_bits: int, embedding_bits: int):
    """Compress the chosen constants only (the rest stays fp16): transformer linears int4 per
    block, lm_head int8 (or int4), the embedding table int8. Returns (mlmodel, roles)."""
    roles = _weight_consts(mlmodel._mil_program, vocab)  # consts only: GPTQ'd linears arrive as constexpr ops already
    bits: dict[str, int] = {}
    if weight_bits == 4:
        bits.update(dict.fromkeys(roles["linear"], 4))
    if output_bits:
        bits.update(dict.fromkeys(roles["lm_head"], 8 if output_bits == 8 else 4))
    if embedding_bits == 8:
        bits.update(dict.fromkeys(roles["embedding"], 8))
    roles["requested"] = sorted(bits)
    return compress_weights(mlmodel, bits, BLOCK), roles


def convert_embedding(embed) -> ct.models.MLModel:
    """LongVU's TokenEmbedding (tokens [1, L] -> embeds [1, L, dim]) -> fp16 mlprogram, one
    gather on the (not yet compressed) table."""
    import coremltools as ct

    length = ct.RangeDim(1, embed.max_len - 1, default=1, symbol="len")
    return convert_program(
        embed,
        (torch.zeros(1, 2, dtype=torch.int32),),
        embed.dynamic_shapes(),
        inputs=[ct.TensorType(name="tokens", shape=(1, length), dtype=np.int32)],
        outputs=[ct.TensorType(name="embeds", dtype=np.float32)],
    )


def export_coreml(
    module,
    out_package: Path,
    weight_bits: int = 4,
    output_bits: int = 8,
    embedding_bits: int = 8,
    convert=convert_decoder,
) -> dict:
    """convert(module) -> mlprogram; compress the chosen weights (`quantize_weights`); save."""
    vocab = module.model.args.vocab_size if hasattr(module, "model") else module.table.num_embeddings
    stages = tqdm(total=3, desc=f"coreml: convert {Path(out_package).name}", unit="stage")
    try:
        mlmodel = convert(module)
        stages.update()
        stages.set_description("coreml: quantize weights")
        given = sum(
            op.op_type.startswith("constexpr_") for op in mlmodel._mil_program.functions["main"].operations
        )  # GPTQ integers
        mlmodel, roles = quantize_weights(mlmodel, vocab, weight_bits, output_bits, embedding_bits)
        wanted = len(roles["requested"]) + given
        got = sum(op.op_type.startswith("constexpr_") for op in mlmodel._mil_program.functions["main"].operations)
        if got < wanted:  # coremltools skips (with a log line) a weight whose in-dim is not a multiple of the block
            raise HandheldError(
                f"only {got} of {wanted} weights were quantized",
                f"every linear's input size must be a multiple of {BLOCK}",
            )
        stages.update()
        stages.set_description("coreml: save")
        mlmodel.save(str(out_package))
        stages.update()
    except HandheldError:
        raise
    except Exception as err:
        msg = error_line(err)
        raise HandheldError(
            f"CoreML conversion failed: {type(err).__name__}: {msg}",
            "this model/config is not supported by the CoreML export; report it with the config",
        ) from err
    finally:
        stages.close()
    summary = program_summary(mlmodel._mil_program)
    summary["quantized_consts"] = {k: len(v) for k, v in roles.items()}
    # linears handed over with GPTQ integers are constexpr ops before the quantizer runs
    summary["quantized_consts"].update(
        linear=len(roles["linear"]) + given, linear_gptq=given, requested=len(roles["requested"]) + given
    )
    return summary


def compressed_decoder(decoder, simulated):
    """A copy of the float wrapper whose block linears carry the simulated model's GPTQ integers
    as coremltools compression metadata (`gptq_compression`); the wrapper itself when the
    simulation is RTN (the converter's quantizer then computes the same integers)."""
    import copy

    from export.llm.quant_coreml import gptq_compression

    if not any(getattr(m, "integers", None) is not None for m in simulated.modules()):
        return decoder
    decoder = copy.deepcopy(decoder)
    gptq_compression(decoder.model, simulated)
    decoder.register_buffer("_COREML_/metadata_version", torch.tensor(2))
    return decoder


def lower_llm_coreml(prepared, folder: Path) -> dict:
    """The LLM's CoreML recipe: the prepared model's float weights -> folder/model.mlpackage."""
    import copy

    from export.llm.quant_coreml import check_coreml_quant_config
    from export.llm.wrapper_coreml import StatefulDecoder

    quant = prepared.quant.for_backend("coreml")
    check_coreml_quant_config(quant)
    from export.llm.quantize import untie_embeddings

    # untied: the embedding (per-row) and lm_head (per-channel) each get their own int8 constant
    model = untie_embeddings(copy.deepcopy(prepared.float_model))
    decoder = StatefulDecoder(model, prepared.wrapper.max_seq_len).eval()
    summary = export_coreml(
        compressed_decoder(decoder, prepared.model),
        folder / "model.mlpackage",
        quant.weight_bits,
        quant.output_bits,
        quant.embedding_bits,
    )
    # the delegate's quantizer takes one global RTN config (see DELEGATE_QUANT): the float decoder
    method = Method(decoder, decoder.example_inputs(), decoder.dynamic_shapes())
    config = delegate_quant(model.args, decoder.max_seq_len)
    delegate = lower_coreml_delegate(method, folder / DELEGATE_FILE, config) if quant.weight_bits == 4 else None
    return {
        "model_file": "model.mlpackage",
        "executorch_coreml_delegate": delegate,
        "coreml": {
            "inputs": ["tokens [1, S] int32", "causal_mask [1, 1, S, input_pos + S] fp32 (0 / -inf)"],
            "states": "key_cache, value_cache [n_layers, n_kv_heads, max_seq_len, head_dim] fp16",
            "weights": f"int4 per-block {BLOCK} linear_symmetric ({quant.weight_method}: GPTQ integers as compression metadata, or the converter's RTN) transformer linears; lm_head {quant.output_bits or 16}-bit; int8 per-row embedding; fp16 rest",
            **summary,
        },
    }


# The ExecuTorch CoreML-delegate variant: the same StatefulDecoder lowered through
# CoreMLPartitioner into one delegate (states taken over as ct.StateType, iOS 18, fp16). Its
# weights are compressed by the delegate's own post-conversion quantizer, which takes a single
# global config: int4 linear_symmetric per block 32 for every constant of more than
# "weight_threshold" elements, so the block linears and lm_head (the untied embedding table of
# the gather stays fp16); the online-Hadamard factors (16,384 elements for R4's [128, 128]) stay
# fp16. So must the RoPE tables ([max_seq_len, head_dim] each): int4 positions are garbage (at
# 2,048 x 64 they were quantized, and the delegate's logits fell to 22.9 dB SQNR against their
# reference), so `delegate_quant` raises the threshold to the tables' size; linears no larger
# than them (SmolLM2's k/v projections from a 1,728-token context on) then stay fp16 too.
DELEGATE_QUANT = {
    "mode": "linear_symmetric",
    "dtype": "int4",
    "granularity": "per_block",
    "block_size": BLOCK,
    "weight_threshold": 65536,
}
DELEGATE_FILE = "model_coreml_delegate.pte"


def delegate_quant(args, max_seq_len: int, base: dict = DELEGATE_QUANT) -> dict:
    """`base` with a threshold that keeps the RoPE tables out of int4."""
    rope_table = max_seq_len * args.head_dim
    return {**base, "weight_threshold": max(base["weight_threshold"], rope_table)}
