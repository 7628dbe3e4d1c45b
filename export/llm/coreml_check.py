"""Parity of a CoreML LLM artifact: Apple's runtime on macOS, the MIL program on Linux.

macOS: the full harness (export/llm/parity.py) through CoreMLRunner's real prediction path.
Linux: the same harness and tolerances through the MIL interpreter (runtime/mil_interpreter.py,
coremltools' value inference, about a second per decode step for SmolLM2 on 2 cores), on a
shorter protocol so an export stays minutes long: LINUX_PROTOCOL below, recorded in the report.

What the Linux check proves: the saved package (its MIL ops, states, int4/int8 weights as
stored) computes, in fp32 math, the same logits as the eager model with the same weight
quantization simulated, over a real prefill and cached decode steps. What it does not prove:
Apple's fp16 kernels, Neural Engine/GPU placement, or that the package compiles and loads on a
device (that needs macOS / an iPhone).
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

from runtime.coreml_runner import coreml_runtime_available

# teacher-forced: one 64-token window (32-token prefill, 31 decode calls); greedy: 2 prompts x 16 tokens
LINUX_PROTOCOL = {"WINDOWS": 1, "WINDOW_LEN": 64, "PROMPTS": 2, "GREEDY_TOKENS": 16}


def check_coreml_parity(folder: Path, prepared=None) -> dict:
    from export.llm import parity
    from export.manifest import update_manifest

    if coreml_runtime_available():
        return parity.check_llm_parity(folder, prepared)
    with mock.patch.multiple(parity, **LINUX_PROTOCOL):
        report = parity.check_llm_parity(folder, prepared)
    report["reference"] = "coremltools int4 per-block / int8 weights simulated, fp32 activations (export/llm/quant_coreml.py)"
    report["engine"] = "mil-interpreter (coremltools value inference, fp32; not Apple's runtime)"
    report["protocol"] = dict(LINUX_PROTOCOL)
    update_manifest(folder, parity=report)
    return report
