"""Greedy answers with their decision margins: is a question decided in the float model, and
does each backend's quantization (simulated eagerly) keep the answer?

A 135M-parameter model is often undecided between two openings of an answer: SmolLM2-135M in
fp32 leads "The capital of France is Paris" over "L'..." by 0.08 logits on "What is the capital
of France?". Any quantization moves first-token logits by about a logit, so such a question
tests the coin, not the artifact. The demo and the chat tests ask questions whose float answer
is decided (`DECIDED_MARGIN`), and `python -m export.llm.answers [OUT.json]` measures a question
list on fp32 and every backend's simulation, side by side (docs/answer_margins.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

# smallest top-1 minus top-2 logit margin, over the greedy steps up to the expected word, for
# a question to count as decided in the float model
DECIDED_MARGIN = 1.5

QUESTIONS = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of France? Answer in one sentence.", "Paris"),
    ("Which city is the capital of France?", "Paris"),
    ("Name the capital of France.", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("Which planet is known as the Red Planet?", "Mars"),
)


@torch.no_grad()
def greedy_answer_margins(model, tokenizer, question: str, expected: str, max_new_tokens: int = 24) -> dict:
    """Greedy chat answer of `model` (a `Llama`: tokens [1, S] -> logits [1, S, vocab]) until
    `expected` appears: its text, whether it appeared, and the top-1/top-2 logit margins on the way."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False).input_ids])
    seq, margins = ids, []
    for _ in range(max_new_tokens):
        top = model(seq)[0, -1].float().topk(2)
        margins.append(float(top.values[0] - top.values[1]))
        seq = torch.cat([seq, top.indices[:1].view(1, 1)], 1)
        if expected.lower() in tokenizer.decode(seq[0, ids.shape[1] :]).lower():
            break
    text = tokenizer.decode(seq[0, ids.shape[1] :])
    found = expected.lower() in text.lower()
    return {"text": text, "found": found, "min_margin": min(margins) if found else None, "first_margin": margins[0]}


def measure_questions(backends=("executorch", "onnx", "coreml"), questions=QUESTIONS) -> dict:
    """{question: {"fp32" | backend: greedy_answer_margins(...)}} on the offline SmolLM2, each
    backend's simulation prepared from the demo preset (rotation + GPTQ), as the export does."""
    import dataclasses

    from export.config import LLM_PRESETS
    from export.llm import pipeline
    from export.llm.checkpoint import load_checkpoint

    ck = load_checkpoint()
    models = {"fp32": ck.model}
    for backend in backends:
        cfg = dataclasses.replace(LLM_PRESETS["smollm2-8da4w"], backend=backend)
        models[backend] = pipeline.prepare_model(cfg, checkpoint=ck).model
    return {
        q: {name: greedy_answer_margins(m, ck.tokenizer, q, key) for name, m in models.items()} for q, key in questions
    }


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("artifacts/answer_margins.json")
    results = measure_questions()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    for q, by_model in results.items():
        cells = [
            "{} {}".format(name, "-" if r["min_margin"] is None else "{:.2f}".format(r["min_margin"]))
            for name, r in by_model.items()
        ]
        print(f"{q:56} {'  '.join(cells)}")
