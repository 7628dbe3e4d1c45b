"""Lower a segmenter (any `forward(image, clicks) -> logits` module) to the three backends.

int8 is static: activation ranges come from real photos with real click maps (calibration).
- ExecuTorch: PT2E + XNNPACKQuantizer (per-channel int8 weights, int8 activations), XNNPACK delegate.
- ONNX: fp32 dynamo export (opset 18), then onnxruntime's static QDQ quantizer.
- CoreML: mlprogram from torch.export(...).run_decompositions({}); int8 weights (activation
  calibration in coremltools needs Apple's runtime, i.e. macOS).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import torch

from export.backends.onnx import OPSET, in_temp_dir


def quantize_pt2e(module: torch.nn.Module, example: tuple, calibration: list[tuple]) -> torch.nn.Module:
    """Static int8 PT2E: per-channel symmetric int8 weights, per-tensor int8 activations."""
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


def to_onnx(
    module: torch.nn.Module,
    example: tuple,
    names: tuple[list[str], list[str]],
    out_file: Path,
    calibration: list[tuple] | None,
) -> dict:
    """fp32 ONNX (calibration None) or QDQ int8 (per-channel int8 weights, int8 activations)."""
    import onnx

    out_file = Path(out_file).resolve()
    with in_temp_dir() as tmp:
        fp32 = tmp / "fp32.onnx"
        with torch.no_grad():
            torch.onnx.export(
                module.eval(),
                example,
                str(fp32),
                dynamo=True,
                opset_version=OPSET,
                input_names=names[0],
                output_names=names[1],
                external_data=False,
                verbose=False,
            )
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


def to_coreml(
    module: torch.nn.Module, example: tuple, names: tuple[list[str], list[str]], out_file: Path, int8: bool
) -> dict:
    """mlprogram (iOS17) with fp16 compute; int8 weights (per-channel, symmetric) when int8."""
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
    """What Linux can check of an .mlpackage: its MIL program's ops, I/O and weight dtypes."""
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
