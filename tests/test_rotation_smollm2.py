"""Exactness on the real offline SmolLM2-135M: the rotated float model computes the same
logits and greedy tokens as the original (float32 round-off only)."""

import copy

import pytest
import torch

from runtime.errors import HandheldError

pytestmark = pytest.mark.slow
MAX_LOGIT_DIFF = 2e-3  # logits reach ~40; fp32 round-off through 30 layers measured ~3e-4


@pytest.fixture(scope="module")
def smollm2():
    from export.llm.checkpoint import load_checkpoint

    return load_checkpoint()


@pytest.fixture(scope="module")
def prompt(smollm2):
    from export.data.text import parity_prompts

    return smollm2.tokenizer(parity_prompts(1)[0], return_tensors="pt").input_ids[:, :24]


def _greedy(model, ids, n=8):
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], dim=1)
    return ids[0].tolist()


@pytest.mark.parametrize("rotation", ["quarot", "spinquant"])
def test_rotated_smollm2_is_exact(smollm2, prompt, rotation):
    from export.rotation import apply_rotation

    ref_model = smollm2.model
    rotated = apply_rotation(copy.deepcopy(ref_model), rotation, None, quantized_kv=True)
    with torch.no_grad():
        diff = float((rotated(prompt) - ref_model(prompt)).abs().max())
    print(f"{rotation}: max |logit diff| = {diff:.2e}")
    assert diff < MAX_LOGIT_DIFF
    assert _greedy(rotated, prompt) == _greedy(ref_model, prompt)


def test_shipped_rotations_refuse_another_checkpoint(smollm2):
    from export.rotation import apply_rotation

    other = copy.deepcopy(smollm2.model)
    other.embed_tokens.weight.data.mul_(1.5)
    with pytest.raises(HandheldError, match="different checkpoint"):
        apply_rotation(other, "spinquant", None, quantized_kv=False)
