"""What Linux can check of a CoreML segmenter (prediction needs Apple's runtime on macOS).

1. Structure: the mlpackage's MIL program loads; inputs/outputs match the model; int8 variants
   store every conv weight as int8 (constexpr_affine_dequantize).
2. Numerics: runtime/mil_interpreter.py runs the saved MIL program op by op in PyTorch (casts
   to fp16 honoured, int8 weights dequantized as the program says) on the held-out photos, and
   compares masks with eager fp32. This checks what the package contains, not Apple's kernels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from export.backends.coreml import coreml_summary
from runtime.mil_interpreter import MILInterpreter


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
    program = MILInterpreter(package, kernels="torch", fp16=True)

    def eager(image, clicks):
        with torch.no_grad():
            return model(torch.from_numpy(image), torch.from_numpy(clicks)).numpy()

    reference = Segmenter(eager, model.config.input_spec)

    def interpreted(image, clicks):
        (logits,) = program.run({"image": image, "clicks": clicks}).values()
        return logits.numpy()

    candidate = Segmenter(interpreted, model.config.input_spec)
    numbers = compare(reference, candidate, parity_cases(reference))
    failures += judge("int8" if int8 else "fp32", numbers)
    return {
        **numbers,
        "structure": summary,
        "failures": failures,
        "checked": "MIL program interpreted in PyTorch on Linux (fp16 casts, int8 weights dequantized); Apple runtime not run",
    }
