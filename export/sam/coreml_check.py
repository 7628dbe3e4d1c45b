"""What Linux can check of a CoreML segmenter (prediction needs Apple's runtime on macOS).

1. Structure: the mlpackage's MIL program loads; inputs/outputs match the model; int8 variants
   store every conv weight as int8 (constexpr_affine_dequantize).
2. Numerics: a small interpreter runs the saved MIL program op by op in PyTorch (conv, relu,
   concat, bilinear upsample, casts to fp16 honoured, int8 weights dequantized as the program
   says) on the held-out photos, and compares masks with eager fp32. This checks what the
   package contains, not Apple's kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from export.sam.lower import coreml_summary


def load_mil_program(package: Path):
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto import load as milproto

    spec = ct.utils.load_spec(str(package))
    weights = Path(package) / "Data" / "com.apple.CoreML" / "weights"
    return milproto.load(spec, specification_version=spec.specificationVersion, file_weights_dir=str(weights))


def _value(var, env):
    if var is None:
        return None
    if isinstance(var, (list, tuple)):
        return [_value(v, env) for v in var]
    if var.name in env:
        return env[var.name]
    return var.val


def _dequantize(op, a):
    q = torch.from_numpy(np.asarray(a["quantized_data"]).astype(np.float32))
    shape = [1] * q.ndim
    shape[int(a["axis"])] = -1
    zero = torch.from_numpy(np.asarray(a["zero_point"]).astype(np.float32)).reshape(shape)
    scale = torch.from_numpy(np.asarray(a["scale"]).astype(np.float32)).reshape(shape)
    return ((q - zero) * scale).half()


def _conv(op, a):
    x = a["x"]
    w = (
        torch.as_tensor(np.asarray(a["weight"])).to(x.dtype)
        if not torch.is_tensor(a["weight"])
        else a["weight"].to(x.dtype)
    )
    bias = a.get("bias")
    b = None if bias is None else torch.as_tensor(np.asarray(bias)).to(x.dtype)
    pad = [int(p) for p in a["pad"]]  # [top, bottom, left, right] for pad_type "custom"
    x = F.pad(x.float(), (pad[2], pad[3], pad[0], pad[1]))
    return F.conv2d(
        x,
        w.float(),
        None if b is None else b.float(),
        stride=tuple(int(s) for s in a["strides"]),
        dilation=tuple(int(d) for d in a["dilations"]),
        groups=int(a["groups"]),
    ).to(w.dtype if x.dtype != torch.float32 else a["x"].dtype)


def _upsample_bilinear(op, a):
    x = a["x"]
    sh, sw = float(a["scale_factor_height"]), float(a["scale_factor_width"])
    align = bool(a.get("align_corners", False))
    return F.interpolate(x.float(), scale_factor=(sh, sw), mode="bilinear", align_corners=align).to(x.dtype)


def _cast(op, a):
    return a["x"].to({"fp16": torch.float16, "fp32": torch.float32}[str(a["dtype"])])


OPS = {
    "const": lambda op, a: op.outputs[0].val,
    "constexpr_affine_dequantize": _dequantize,
    "cast": _cast,
    "concat": lambda op, a: torch.cat([v.to(a["values"][0].dtype) for v in a["values"]], dim=int(a["axis"])),
    "conv": _conv,
    "relu": lambda op, a: torch.relu(a["x"]),
    "upsample_bilinear": _upsample_bilinear,
}


def run_mil(program, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Interpret the program's main function on numpy inputs (fp16 where the program casts)."""
    fn = program.functions["main"]
    env = {name: torch.from_numpy(np.asarray(v)) for name, v in inputs.items()}
    for op in fn.operations:
        if op.op_type not in OPS:
            raise NotImplementedError(f"MIL op {op.op_type} has no interpreter rule")
        args = {k: _value(v, env) for k, v in op.inputs.items()}
        out = OPS[op.op_type](op, args)
        env[op.outputs[0].name] = out
    return [env[v.name].float().numpy() for v in fn.outputs]


def check_coreml(package: Path, model, int8: bool) -> dict:
    from export.sam.parity import compare, judge, parity_cases
    from runtime.segment import Segmenter

    summary = coreml_summary(package)
    failures = []
    s = model.config.image_size
    if summary["inputs"] != {"image": [1, 3, s, s], "clicks": [1, model.config.click_channels, s, s]}:
        failures.append(f"inputs {summary['inputs']} do not match the model")
    # every conv weight int8; only a 1-output-channel head may stay fp16 (coremltools skips tiny tensors)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    need = sum(1 for m in convs if m.out_channels > 1)
    if int8 and not need <= summary["int8_weight_tensors"] <= len(convs):
        failures.append(f"{summary['int8_weight_tensors']} int8 weight tensors for {len(convs)} convolutions")
    program = load_mil_program(package)

    def eager(image, clicks):
        with torch.no_grad():
            return model(torch.from_numpy(image), torch.from_numpy(clicks)).numpy()

    reference = Segmenter(eager, model.config)
    candidate = Segmenter(lambda image, clicks: run_mil(program, {"image": image, "clicks": clicks})[0], model.config)
    numbers = compare(reference, candidate, parity_cases(reference))
    failures += judge("int8" if int8 else "fp32", numbers)
    return {
        **numbers,
        "structure": summary,
        "failures": failures,
        "checked": "MIL program interpreted in PyTorch on Linux (fp16 casts, int8 weights dequantized); Apple runtime not run",
    }
