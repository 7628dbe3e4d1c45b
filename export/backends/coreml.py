"""Float decoder -> torch.export -> CoreML iOS 18 mlprogram (stateful KV cache) -> 4-bit weights.

- `StatefulDecoder` (export/llm/wrapper_coreml.py) keeps the KV cache in two buffers that
  coremltools turns into `ct.StateType` states (read_state / slice_update / coreml_update_state).
- fp16 program (what iPhones run); tokens/mask inputs with RangeDim sequence lengths.
- `linear_quantize_weights`: transformer linears int4 per-block 32 (linear_symmetric), lm_head
  and the embedding table int8 per channel; every other constant (RoPE tables, the online
  Hadamard factors of R4/R3, which stay matmul ops) is left fp16.
See export/llm/quant_coreml.py for the numbers and their eager simulation.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from export.errors import HandheldError
from export.llm.quant_coreml import BLOCK

DEPLOYMENT_TARGET = "iOS18"  # ct.StateType needs iOS 18 / macOS 15


def convert_decoder(decoder) -> "ct.models.MLModel":
    """StatefulDecoder -> fp16 mlprogram with states (not yet compressed)."""
    import coremltools as ct

    a = decoder.model.args
    n = decoder.max_seq_len - 1
    seq, total = ct.RangeDim(1, n, default=1, symbol="seq"), ct.RangeDim(1, n, default=1, symbol="total")
    with torch.no_grad():
        ep = torch.export.export(decoder, decoder.example_inputs(), dynamic_shapes=decoder.dynamic_shapes(), strict=False)
    ep = ep.run_decompositions({})
    cache = (a.n_layers, a.n_kv_heads, decoder.max_seq_len, a.head_dim)
    return ct.convert(
        ep,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
        compute_precision=ct.precision.FLOAT16,
        inputs=[
            ct.TensorType(name="tokens", shape=(1, seq), dtype=np.int32),
            ct.TensorType(name="causal_mask", shape=(1, 1, seq, total), dtype=np.float32),
        ],
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
        states=[ct.StateType(wrapped_type=ct.TensorType(shape=cache, dtype=np.float16), name=name) for name in ("key_cache", "value_cache")],
        skip_model_load=True,  # no CoreML runtime on Linux; macOS loads the saved package
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
    """linear_quantize_weights on the chosen constants only (the rest stays fp16)."""
    import coremltools.optimize.coreml as cto

    roles = _weight_consts(mlmodel._mil_program, vocab)
    int4 = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=BLOCK, weight_threshold=0)
    int8 = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0)
    names: dict[str, object] = {}
    if weight_bits == 4:
        names.update({n: int4 for n in roles["linear"]})
    if output_bits:
        names.update({n: int8 if output_bits == 8 else int4 for n in roles["lm_head"]})
    if embedding_bits == 8:
        names.update({n: int8 for n in roles["embedding"]})
    roles["requested"] = sorted(names)
    if not names:
        return mlmodel, roles
    config = cto.OptimizationConfig(global_config=None, op_name_configs=names)
    return cto.linear_quantize_weights(mlmodel, config=config), roles


def program_summary(program) -> dict:
    ops = collections.Counter(op.op_type for op in program.functions["main"].operations)
    return {
        "op_counts": dict(sorted((k, v) for k, v in ops.items() if k != "const")),
        "deployment_target": DEPLOYMENT_TARGET,
        "states": [n for n, v in program.functions["main"].inputs.items() if hasattr(v.sym_type, "wrapped_type")],
    }


def export_coreml(decoder, out_package: Path, weight_bits: int = 4, output_bits: int = 8, embedding_bits: int = 8) -> dict:
    stages = tqdm(total=3, desc="coreml: convert", unit="stage")
    try:
        mlmodel = convert_decoder(decoder)
        stages.update()
        stages.set_description("coreml: 4-bit weights")
        mlmodel, roles = quantize_weights(mlmodel, decoder.model.args.vocab_size, weight_bits, output_bits, embedding_bits)
        wanted = len(roles["requested"])
        got = sum(op.op_type.startswith("constexpr_") for op in mlmodel._mil_program.functions["main"].operations)
        if got < wanted:  # coremltools skips (with a log line) a weight whose in-dim is not a multiple of the block
            raise HandheldError(f"only {got} of {wanted} weights were quantized", f"every linear's input size must be a multiple of {BLOCK}")
        stages.update()
        stages.set_description("coreml: save")
        mlmodel.save(str(out_package))
        stages.update()
    except HandheldError:
        raise
    except Exception as err:
        msg = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise HandheldError(
            f"CoreML conversion failed: {type(err).__name__}: {msg}",
            "this model/config is not supported by the CoreML export; report it with the config",
        ) from err
    finally:
        stages.close()
    summary = program_summary(mlmodel._mil_program)
    summary["quantized_consts"] = {k: len(v) for k, v in roles.items()}
    return summary


def lower_llm_coreml(prepared, folder: Path) -> dict:
    """`LLM_BACKENDS["coreml"]`: the prepared model's float weights -> folder/model.mlpackage."""
    import copy

    from export.llm.quant_coreml import check_coreml_quant_config
    from export.llm.wrapper_coreml import StatefulDecoder

    quant = prepared.quant.for_backend("coreml")
    check_coreml_quant_config(quant)
    from export.llm.quantize import untie_embeddings

    # untied: the embedding (per-row) and lm_head (per-channel) each get their own int8 constant
    model = untie_embeddings(copy.deepcopy(prepared.float_model))
    decoder = StatefulDecoder(model, prepared.wrapper.max_seq_len).eval()
    summary = export_coreml(decoder, folder / "model.mlpackage", quant.weight_bits, quant.output_bits, quant.embedding_bits)
    return {
        "model_file": "model.mlpackage",
        "coreml": {
            "inputs": ["tokens [1, S] int32", "causal_mask [1, 1, S, input_pos + S] fp32 (0 / -inf)"],
            "states": "key_cache, value_cache [n_layers, n_kv_heads, max_seq_len, head_dim] fp16",
            "weights": f"int4 per-block {BLOCK} linear_symmetric (transformer linears); lm_head {quant.output_bits or 16}-bit; int8 per-row embedding; fp16 rest",
            **summary,
        },
    }
