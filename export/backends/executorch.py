"""torch.export -> Edge -> XNNPACK delegate -> .pte."""

from __future__ import annotations

import collections
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


def lower_to_executorch(
    module: torch.nn.Module,
    example_inputs: tuple,
    out_file: Path,
    dynamic_shapes: Any = None,
    metadata: dict | None = None,
    desc: str = "executorch",
) -> dict:
    """Export `module`, delegate to XNNPACK, write `out_file`; return the delegation summary."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    stages = tqdm(total=3, desc=f"{desc}: export", unit="stage")
    try:
        with torch.no_grad():
            ep = torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes, strict=False)
        weight_bits = collections.Counter(str(b) if b else "float" for b in linear_weight_bits(ep))
        stages.update()
        stages.set_description(f"{desc}: lower to XNNPACK")
        edge = to_edge_transform_and_lower(
            ep,
            partitioner=[XnnpackPartitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
            constant_methods=metadata,
        )
        summary = delegation_summary(edge.exported_program())
        summary["linear_weight_bits"] = dict(weight_bits)
        stages.update()
        stages.set_description(f"{desc}: serialize")
        program = edge.to_executorch(
            ExecutorchBackendConfig(
                extract_delegate_segments=True,
                do_quant_fusion_and_const_prop=True,
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
            )
        )
        Path(out_file).write_bytes(program.buffer)
        stages.update()
    except HandheldError:
        raise
    except Exception as err:
        raise HandheldError(
            f"lowering to ExecuTorch failed: {type(err).__name__}: {error_line(err)}",
            "this model/config is not supported by the XNNPACK export; report it with the config",
        ) from err
    finally:
        stages.close()
    return summary
