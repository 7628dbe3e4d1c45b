"""The CoreML package of the real SmolLM2 (QuaRot-rotated, int4 per-block weights, stateful KV
cache), its saved MIL program evaluated op by op on Linux with coremltools' value inference,
against eager with the same weight quantization simulated: a real-text prefill and cached
decode steps. fp32 math over what the package stores; not Apple's fp16 runtime (macOS runs the
real prediction path through the same runner)."""

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_coreml(tmp_path_factory, smollm2):
    from export.config import LLMExportConfig
    from tests.llm_helpers import export_smollm2

    cfg = LLMExportConfig(backend="coreml", rotation="quarot", max_seq_len=64)
    return export_smollm2(tmp_path_factory, smollm2, cfg, "coreml")


def test_real_package_structure(smollm2_coreml):
    _, manifest, _ = smollm2_coreml
    c = manifest["coreml"]
    # the 210 block linears arrive with GPTQ integers (compression metadata), lm_head and table by the quantizer
    assert c["quantized_consts"] == {"linear": 210, "linear_gptq": 210, "lm_head": 1, "embedding": 1, "requested": 212}
    assert c["op_counts"]["constexpr_blockwise_shift_scale"] == 212
    assert c["op_counts"]["read_state"] >= 2 and c["op_counts"]["coreml_update_state"] >= 2


def test_mil_program_matches_eager_on_real_text(smollm2_coreml, smollm2):
    from export.data.text import token_windows
    from export.llm.parity import EagerLLMRunner, _teacher_forced
    from runtime.coreml_runner import CoreMLRunner
    from runtime.generate import LLMStepper
    from runtime.manifest import load_manifest

    folder, _, prepared = smollm2_coreml
    window = token_windows(smollm2.tokenizer, "parity", 44, 1)[0]  # 32-token prefill + 11 cached decode steps
    art = _teacher_forced(LLMStepper(CoreMLRunner(folder, load_manifest(folder), interpreter=True)), window)
    ref = _teacher_forced(LLMStepper(EagerLLMRunner(prepared.wrapper, 64)), window)
    cos = torch.nn.functional.cosine_similarity(art.double(), ref.double(), dim=-1)
    # fp16-stored norms/Hadamard factors and fp32 summation order are the only differences
    assert float(cos.min()) > 0.999, cos
    assert bool((art.argmax(-1) == ref.argmax(-1)).all())
