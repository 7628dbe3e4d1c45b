"""Any PyTorch module -> CoreML mlprogram (.mlpackage), and the CoreML tools every family shares.

- `convert_program`: torch.export -> `ct.convert` with named, possibly ranged inputs and
  `ct.StateType` states (the decoders' KV caches), fp16 or fp32.
- `compress_weights`: `linear_quantize_weights` on chosen constants only (int4 per block,
  int8 per channel), the rest left as converted.
- `export_static_coreml`: a static-shape module, fp32 or fp16 with int8 weights (SqueezeSAM,
  LongVU's vision pieces).
- `lower_coreml_delegate` / `delegate_package`: an ExecuTorch program whose whole graph is one
  CoreML delegate, and the mlpackage it carries.
Which constants a family compresses, and how, is the family's (export/llm/lower_coreml.py).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from runtime.errors import HandheldError, error_line

if TYPE_CHECKING:
    import coremltools as ct

    from export.backends.executorch import Method

STATEFUL_TARGET = "iOS18"  # ct.StateType needs iOS 18 / macOS 15


def convert_program(
    module: torch.nn.Module,
    example: tuple,
    dynamic_shapes: Any,
    inputs: list,
    outputs: list,
    states: list | None = None,
    target: str = STATEFUL_TARGET,
) -> ct.models.MLModel:
    """torch.export (non-strict, decomposed) -> an fp16 mlprogram for `target`, not loaded
    (there is no CoreML runtime on Linux; macOS loads the saved package)."""
    import coremltools as ct

    with torch.no_grad():
        ep = torch.export.export(module, example, dynamic_shapes=dynamic_shapes, strict=False)
    return ct.convert(
        ep.run_decompositions({}),
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT16,
        inputs=inputs,
        outputs=outputs,
        **({"states": states} if states else {}),
        skip_model_load=True,
    )


def compress_weights(mlmodel, bits: dict[str, int], block: int):
    """linear_quantize_weights on the constants named in `bits` only: 4 -> int4 linear_symmetric
    per block of `block` along the input dim, 8 -> int8 per channel; every other constant is
    left as it is. The mlmodel itself when `bits` is empty."""
    import coremltools.optimize.coreml as cto

    if not bits:
        return mlmodel
    int4 = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=block, weight_threshold=0
    )
    int8 = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
    )
    configs = {name: int4 if b == 4 else int8 for name, b in bits.items()}
    config = cto.OptimizationConfig(global_config=None, op_name_configs=configs)
    return cto.linear_quantize_weights(mlmodel, config=config)


def program_summary(program, target: str = STATEFUL_TARGET) -> dict:
    """Op counts (constants left out), deployment target and states of a MIL program."""
    ops = collections.Counter(op.op_type for op in program.functions["main"].operations)
    return {
        "op_counts": dict(sorted((k, v) for k, v in ops.items() if k != "const")),
        "deployment_target": target,
        "states": [n for n, v in program.functions["main"].inputs.items() if hasattr(v.sym_type, "wrapped_type")],
    }


def lower_coreml_delegate(
    method: Method, out_file: Path, weight_quantization: dict, target: str = STATEFUL_TARGET
) -> dict:
    """One method -> an ExecuTorch .pte whose whole graph is one CoreML delegate (mutable
    buffers taken over as states, fp16, the delegate's own quantizer on `weight_quantization`);
    an error when the partitioner leaves anything outside it."""
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with torch.no_grad():
            ep = torch.export.export(
                method.module, method.example_inputs, dynamic_shapes=method.dynamic_shapes, strict=False
            )
        specs = CoreMLBackend.generate_compile_specs(
            minimum_deployment_target=getattr(ct.target, target),
            compute_precision=ct.precision.FLOAT16,
            op_linear_quantizer_config=weight_quantization,
        )
        program = to_edge_transform_and_lower(
            ep, partitioner=[CoreMLPartitioner(compile_specs=specs, take_over_mutable_buffer=True)]
        )
        graph = program.exported_program().graph_module
        delegates = [m for name, m in graph.named_children() if name.startswith("lowered_module")]
        outside = sorted(
            {
                str(n.target)
                for n in graph.graph.nodes
                if n.op == "call_function"
                and "executorch_call_delegate" not in str(n.target)
                and "getitem" not in str(n.target)
            }
        )
        if len(delegates) != 1 or outside:
            raise HandheldError(
                f"the CoreML partitioner left {outside or 'several delegates'} outside one delegate",
                "report it with the model config",
            )
        out_file.write_bytes(program.to_executorch().buffer)
    except HandheldError:
        raise
    except Exception as err:
        msg = error_line(err)
        raise HandheldError(
            f"ExecuTorch CoreML-delegate lowering failed: {type(err).__name__}: {msg}",
            "report it with the model config",
        ) from err
    return {
        "file": out_file.name,
        "delegate_backend": delegates[0].backend_id,
        "delegates": 1,
        "ops_outside_delegate": 0,
        "weight_quantization": dict(weight_quantization),
    }


def delegate_package(pte: Path, out_dir: Path) -> Path:
    """Unpack the mlpackage the CoreML delegate of `pte` carries into `out_dir`; its path."""
    from executorch.backends.apple.coreml import executorchcoreml
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(Path(pte).read_bytes()).program
    delegate = program.execution_plan[0].delegates[0]
    if delegate.id != "CoreMLBackend" or delegate.processed.location.name != "INLINE":
        raise HandheldError(
            f"{pte} does not carry an inline CoreML delegate ({delegate.id})",
            "re-export with `handheld export llm --backend coreml`",
        )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if not executorchcoreml.unflatten_directory_contents(
        program.backend_delegate_data[delegate.processed.index].data, str(out_dir)
    ):
        raise HandheldError(f"the CoreML delegate payload of {pte} is corrupted", "re-export the artifact")
    found = sorted(Path(out_dir).rglob("*.mlpackage"))
    if not found:
        raise HandheldError(f"no mlpackage inside the CoreML delegate of {pte}", "re-export the artifact")
    return found[0]


def export_static_coreml(
    module: torch.nn.Module, example: tuple, names: tuple[list[str], list[str]], out_file: Path, int8: bool
) -> dict:
    """A static-shape module as an mlprogram (iOS 17): fp32, or fp16 compute with int8 weights
    (per-channel, symmetric) when int8."""
    import coremltools as ct

    with torch.no_grad():
        ep = torch.export.export(module.eval(), example, strict=False).run_decompositions({})
    inputs = [ct.TensorType(name=n, shape=tuple(t.shape), dtype=np.float32) for n, t in zip(names[0], example)]
    mlmodel = ct.convert(
        ep,
        inputs=inputs,
        outputs=[ct.TensorType(name=n) for n in names[1]],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16 if int8 else ct.precision.FLOAT32,
    )
    if int8:
        config = ct.optimize.coreml.OptimizationConfig(
            global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
            )
        )
        mlmodel = ct.optimize.coreml.linear_quantize_weights(mlmodel, config=config)
    mlmodel.save(str(out_file))
    return coreml_summary(Path(out_file))


def coreml_summary(package: Path) -> dict:
    """What Linux can check of an .mlpackage: its MIL program's ops, I/O and int8 weight count."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    program = spec.mlProgram
    ops, int8_weights = collections.Counter(), 0
    for fn in program.functions.values():
        for block in fn.block_specializations.values():
            for op in block.operations:
                ops[op.type] += 1
                if (
                    op.type.startswith("constexpr_")
                    and "quantize" in op.type
                    or op.type == "constexpr_blockwise_shift_scale"
                ):
                    int8_weights += 1
    return {
        "spec_version": spec.specificationVersion,
        "inputs": {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input},
        "outputs": [o.name for o in spec.description.output],
        "ops": dict(ops),
        "int8_weight_tensors": int8_weights,
    }
