"""Any PyTorch module -> ONNX (opset 18), and the ONNX tools every family shares.

- `export_program`: the dynamo exporter with named inputs/outputs, dynamic shapes and custom
  translations (the LLM decoders' graphs, LongVU's vision pieces).
- `export_static_onnx`: a static-shape module as fp32 or QDQ int8 (onnxruntime's static
  quantizer; SqueezeSAM).
- `quantize_matmul_nbits` / `write_block_integers`: 4/8-bit MatMulNBits on chosen MatMul nodes,
  and storing given integers (GPTQ's) on the quantizer's scales.
- `module_path` / `is_linear`: the module path the exporter records on every node, which is how
  a family picks the nodes to quantize (export/llm/lower_onnx.py).
Nothing here knows a model family.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from runtime.errors import HandheldError

if TYPE_CHECKING:
    import numpy as np

# every Handheld ONNX graph: MatMulNBits is com.microsoft; 18 keeps the standard ops runnable on
# older ORT builds, and static QDQ int8 activations (SqueezeSAM) fail at opset 21 (18-20 work)
OPSET = 18


@contextlib.contextmanager
def in_temp_dir():
    """ORT's quantizer writes temp files (augmented models) into the working directory: keep them out of the user's."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="handheld-onnx-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(cwd)


def module_path(node) -> str:
    """The nn.Module path the dynamo exporter recorded for `node` ('' when none)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = ast.literal_eval(prop.value)  # a Python list literal of strings
            return scopes[-2] if len(scopes) >= 2 else ""
    return ""


def is_linear(node) -> bool:
    return node.op_type == "MatMul" and any(
        p.key == "pkg.torch.onnx.class_hierarchy" and "torch.nn.modules.linear.Linear" in p.value
        for p in node.metadata_props
    )


def export_program(
    module: torch.nn.Module,
    example: tuple,
    names: tuple[list[str], list[str]],
    dynamic_shapes: Any = None,
    translations: dict | None = None,
):
    """The dynamo exporter at OPSET with onnxscript's optimizer: an `ONNXProgram` (save it with
    `.save(path)`, or take `.model_proto` to edit the graph first)."""
    with torch.no_grad():
        return torch.onnx.export(
            module,
            example,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=translations,
            input_names=names[0],
            output_names=names[1],
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )


def quantize_matmul_nbits(model, names: list[str], bits: int, block: int, accuracy_level: int):
    """onnxruntime's MatMulNBitsQuantizer on the MatMul nodes `names` only (symmetric, per block
    along K); every other MatMul is left as it is."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in set(names)]
    q = MatMulNBitsQuantizer(
        model, bits=bits, block_size=block, is_symmetric=True, accuracy_level=accuracy_level, nodes_to_exclude=others
    )
    q.process()
    return q.model.model


def pack_int4(q: torch.Tensor, block: int) -> np.ndarray:
    """[N, K] ints in [-8, 7] -> MatMulNBits' B: uint8 [N, ceil(K / block), block / 2], q + 8,
    the even element in the low nibble; K is padded to whole blocks with zero bytes, as
    onnxruntime's quantizer pads (the kernel never reads them)."""
    import numpy as np

    q = torch.nn.functional.pad(q, (0, (-q.shape[1]) % block), value=-8)
    n, k = q.shape
    u = (q.to(torch.int16) + 8).to(torch.uint8).numpy().reshape(n, k // block, block // 2, 2)
    return (u[..., 0] | (u[..., 1] << 4)).astype(np.uint8)


def write_block_integers(model, module_paths: dict[str, str], weights: dict[str, torch.Tensor]) -> int:
    """Rewrite the 4-bit integers of quantized linears with `weights` (dequantized, [N, K], on
    the scales the quantizer chose: GPTQ's), keyed by module path; returns how many changed.
    The scales are the quantizer's; a weight that is not on them is an error."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        path = module_paths.get(node.name.removesuffix("_Q4"))
        if node.op_type != "MatMulNBits" or path not in weights:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        block, bits = attrs["block_size"], attrs["bits"]
        if bits != 4 or len(node.input) > 3:
            raise HandheldError(
                f"{node.name}: expected symmetric 4-bit MatMulNBits", "report this with the model config"
            )
        w = weights[path].double()
        scale = torch.from_numpy(numpy_helper.to_array(inits[node.input[2]]).copy()).double().reshape(w.shape[0], -1)
        col = scale.repeat_interleave(block, dim=1)[:, : w.shape[1]]  # blocks past K are padding
        q = torch.round(w / torch.where(col == 0, torch.ones_like(col), col)).clamp(-8, 7)
        err = float((q * col - w).abs().max())
        if err > 1e-5 * float(w.abs().max()) + 1e-12:
            raise HandheldError(
                f"{path}: the weights are not on the quantizer's grid (max error {err:.3g})",
                "quantize them on MatMulNBits' block scales",
            )
        packed = pack_int4(q.long(), block)
        old = numpy_helper.to_array(inits[node.input[1]])
        changed += int((packed != old).any())
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(packed, node.input[1]))
    return changed


def graph_summary(model) -> dict:
    ops = collections.Counter(n.op_type for n in model.graph.node)
    bits = collections.Counter()
    for n in model.graph.node:
        if n.op_type == "MatMulNBits":
            bits[str(next(a.i for a in n.attribute if a.name == "bits"))] += 1
    inits = {i.name for i in model.graph.initializer}
    float_weight_matmuls = sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits)
    return {
        "op_counts": dict(sorted(ops.items())),
        "matmulnbits_by_bits": dict(bits),
        "float_constant_matmuls": float_weight_matmuls,  # MatMuls left float (the LLM: its online Hadamards)
        "opset": OPSET,
    }


def export_static_onnx(
    module: torch.nn.Module,
    example: tuple,
    names: tuple[list[str], list[str]],
    out_file: Path,
    calibration: list[tuple] | None,
) -> dict:
    """A static-shape module as fp32 ONNX (calibration None) or QDQ int8 (per-channel int8 weights,
    int8 activations; ranges from onnxruntime's static quantizer run on `calibration`)."""
    import onnx

    out_file = Path(out_file).resolve()
    with in_temp_dir() as tmp:
        fp32 = tmp / "fp32.onnx"
        export_program(module.eval(), example, names).save(str(fp32))
        if calibration is None:
            os.replace(fp32, out_file)
        else:
            from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
            from onnxruntime.quantization.shape_inference import quant_pre_process

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.items = iter([{n: t.numpy() for n, t in zip(names[0], inputs)} for inputs in calibration])

                def get_next(self):
                    return next(self.items, None)

            pre = tmp / "pre.onnx"
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre),
                str(out_file),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    ops = collections.Counter(n.op_type for n in onnx.load(str(out_file)).graph.node)
    return {"opset": OPSET, "ops": dict(ops)}
