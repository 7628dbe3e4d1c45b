"""The ONNX artifact of the real SmolLM2 as shipped (SpinQuant-rotated, GPTQ on MatMulNBits 4-bit) against eager with
MatMulNBits simulated, on held-out Wikipedia text; and a real chat answer from the artifact.
Exported once per session without the full harness (tests stay minutes long); the judged
numbers are the ONNX tolerances of export/llm/lower_onnx.py."""

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_onnx(tmp_path_factory, smollm2):
    from export.config import LLMExportConfig
    from tests.llm_helpers import export_smollm2

    cfg = LLMExportConfig(backend="onnx", max_seq_len=320)  # the shipped rotation and GPTQ
    return export_smollm2(tmp_path_factory, smollm2, cfg, "onnx")


def test_real_model_graph(smollm2_onnx):
    _, manifest, _ = smollm2_onnx
    g = manifest["onnx_graph"]
    assert g["matmulnbits_by_bits"] == {"4": 30 * 4 + 1}  # q|k|v and gate|up fused; lm_head 4-bit (GPTQ)
    assert g["float_constant_matmuls"] == 30  # R4's [128, 128] Sylvester factor per layer stays float
    assert g["roles"]["other"] == 30 * 2  # R4's two factors (x S_128, 12 x 12) per layer, not quantized
    assert g["op_counts"]["GroupQueryAttention"] == 30  # attention: one fused node per layer


def test_teacher_forced_logits_match_matmulnbits_simulation(smollm2_onnx, smollm2):
    from export.data.text import token_windows
    from export.llm.lower_onnx import judge_onnx
    from export.llm.parity import EagerLLMRunner, _perplexity, _teacher_forced, top1_metrics
    from export.llm.quantize import with_cached_dequantized_weights
    from export.llm.wrapper import CachedDecoder
    from runtime.generate import LLMStepper
    from runtime.runner import open_runner

    folder, manifest, prepared = smollm2_onnx
    window = token_windows(smollm2.tokenizer, "parity", 288, 1)[0]  # 256 judged positions, as the harness
    art = _teacher_forced(LLMStepper(open_runner(folder, threads=2)), window)
    ref_wrapper = CachedDecoder(with_cached_dequantized_weights(prepared.model), 320).eval()
    ref = _teacher_forced(LLMStepper(EagerLLMRunner(ref_wrapper, 320)), window)
    cos = torch.nn.functional.cosine_similarity(art.double(), ref.double(), dim=-1)
    targets = window[32:]
    ppl_art, ppl_ref = _perplexity(art, targets), _perplexity(ref, targets)
    metrics = {
        "logits_cosine_min": float(cos.min()),
        "logits_cosine_p01": float(cos.quantile(0.01)),
        "logits_cosine_mean": float(cos.mean()),
        **top1_metrics(art, ref),
        "perplexity_ratio": ppl_art / ppl_ref,
        "perplexity_ratio_inverse": ppl_ref / ppl_art,
    }
    assert judge_onnx(metrics)["passed"], metrics
    assert metrics["top1_decided_positions"] >= 64, metrics  # the decided judge sees a real share of the text


def test_chat_answer_from_the_onnx_artifact(smollm2_onnx):
    from runtime.generate import SamplingConfig
    from runtime.llm import LLMSession

    folder, _, _ = smollm2_onnx
    answer = LLMSession(folder, threads=2).ask(
        "What is the capital of France? Answer in one sentence.", SamplingConfig(max_new_tokens=24)
    )
    assert "Paris" in answer.text


@pytest.mark.arm
def test_onnx_artifact_on_onnxruntimes_arm_kernels(smollm2_onnx):
    from export.arm.parity import check_aarch64

    folder, _, prepared = smollm2_onnx
    report = check_aarch64(folder, ("dotprod", "i8mm"), prepared=prepared, progress=False)
    assert report["passed"], report["failures"]
    assert report["i8mm"]["kernel_family"] == "i8mm"
