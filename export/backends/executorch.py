"""torch.export -> Edge -> XNNPACK delegate -> .pte."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.progress import tqdm
from runtime.errors import HandheldError, error_line


def delegation_summary(edge_program) -> dict:
    """Which ops XNNPACK took and which stayed on ExecuTorch's portable/custom kernels; the same
    keys for every model family."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge_program.graph_module)
    non_delegated = collections.Counter()
    delegated = collections.Counter()
    for op, row in info.delegation_by_operator.items():
        if row.delegated:
            delegated[op] = row.delegated
        if row.non_delegated and op != "getitem":  # getitem only unpacks a delegate's outputs
            non_delegated[op] = row.non_delegated
    return {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "non_delegated_nodes": info.num_non_delegated_nodes,
        "delegated_ops": dict(delegated),
        "non_delegated_ops": dict(non_delegated),
        # a layout change between two delegates runs on portable kernels: what keeps int8 from paying
        "layout_transposes_outside_delegate": sum(
            n for op, n in non_delegated.items() if "permute" in op or "transpose" in op
        ),
    }


def linear_weight_bits(ep) -> list[int | None]:
    """Weight bit width of every aten.linear in an exported program (None = float weight).

    torchao's quantized linears export as dequantize_affine(w_int, block, scale, zp, dtype,
    quant_min, quant_max) -> linear; XNNPACK fuses that pattern into a QB4W/QC8W GEMM.
    """
    bits = []
    for node in ep.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default:
            continue
        w = node.args[1]
        if getattr(w, "op", None) == "call_function" and "dequantize_affine" in str(w.target):
            qmin, qmax = w.args[5], w.args[6]
            bits.append(int(qmax - qmin + 1).bit_length() - 1)
        else:
            bits.append(None)
    return bits


@dataclass(frozen=True)
class Method:
    """One method of an ExecuTorch program: a module, its example inputs and dynamic shapes."""

    module: torch.nn.Module
    example_inputs: tuple
    dynamic_shapes: Any = None


# How the program's memory is planned. "kv-cache": inputs are not allocated by the plan (the
# runner binds them; the decoders' caches are mutable buffers), symbolic shapes are bounded by
# their constraints, quantize/dequantize pairs folded; what the decoders (LLM, LongVU) need.
# "default": ExecuTorch's defaults (the segmenter: static shapes, one forward).
PLANNING = ("kv-cache", "default")


def lower_to_executorch(
    methods: dict[str, Method],
    out_file: Path,
    metadata: dict | None = None,
    planning: str = "kv-cache",
    desc: str = "executorch",
    fix: str = "this model/config is not supported by the XNNPACK export; report it with the config",
) -> dict[str, dict]:
    """torch.export every method, delegate all to XNNPACK as one program, write `out_file`;
    return each method's delegation summary (the same keys for every family)."""
    import executorch.kernels.quantized  # noqa: F401  (out variants for any quantize op left outside XNNPACK)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    if planning not in PLANNING:
        raise ValueError(f"planning must be one of {PLANNING}, not {planning!r}")
    kv_cache = planning == "kv-cache"
    stages = tqdm(total=len(methods) + 2, desc=f"{desc}: torch.export", unit="stage")
    try:
        programs, weight_bits = {}, {}
        with torch.no_grad():
            for name, m in methods.items():
                ep = torch.export.export(m.module, m.example_inputs, dynamic_shapes=m.dynamic_shapes, strict=False)
                programs[name] = ep
                weight_bits[name] = dict(collections.Counter(str(b) if b else "float" for b in linear_weight_bits(ep)))
                stages.update()
        stages.set_description(f"{desc}: lower to XNNPACK")
        edge = to_edge_transform_and_lower(
            programs if len(programs) > 1 else next(iter(programs.values())),
            partitioner=[XnnpackPartitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True) if kv_cache else None,
            constant_methods=metadata,
        )
        summaries = {
            name: {**delegation_summary(edge.exported_program(name)), "linear_weight_bits": weight_bits[name]}
            for name in programs
        }
        stages.update()
        stages.set_description(f"{desc}: serialize")
        config = (
            ExecutorchBackendConfig(
                extract_delegate_segments=True,
                do_quant_fusion_and_const_prop=True,
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
            )
            if kv_cache
            else None
        )
        Path(out_file).write_bytes(edge.to_executorch(config).buffer)
        stages.update()
    except HandheldError:
        raise
    except Exception as err:
        raise HandheldError(f"lowering to ExecuTorch failed: {type(err).__name__}: {error_line(err)}", fix) from err
    finally:
        stages.close()
    return summaries


def quantize_pt2e(module: torch.nn.Module, example: tuple, calibration: list[tuple]) -> torch.nn.Module:
    """Static int8 PT2E for XNNPACK: per-channel symmetric int8 weights, per-tensor int8 activations,
    ranges from running `calibration` (each item one call's inputs)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(module.eval(), example, strict=False).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for inputs in calibration:
            prepared(*inputs)
    return convert_pt2e(prepared)
