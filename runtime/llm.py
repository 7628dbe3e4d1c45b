"""An LLM artifact ready to chat: runner + tokenizer + chat template + generation loop."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from runtime.generate import GenerationResult, LLMStepper, SamplingConfig, generate
from runtime.runner import open_runner
from runtime.tokenizer import ArtifactTokenizer


class LLMSession:
    def __init__(self, artifact: Path, threads: int | None = None):
        self.runner = open_runner(artifact, threads=threads)
        self.tokenizer = ArtifactTokenizer(artifact, self.runner.manifest["tokenizer"])
        self.step = LLMStepper(self.runner)

    def ask(self, prompt: str, cfg: SamplingConfig = SamplingConfig(), chat: bool = True, stream: Callable[[str], None] | None = None) -> GenerationResult:
        text = self.tokenizer.chat_prompt(prompt) if chat else prompt
        ids = self.tokenizer.encode(text)
        emitted: list[int] = []
        printed = ""

        def on_token(token: int) -> None:
            nonlocal printed
            emitted.append(token)
            decoded = self.tokenizer.decode(emitted)
            if stream and not decoded.endswith("\ufffd"):  # wait for complete UTF-8 sequences
                stream(decoded[len(printed) :])
                printed = decoded

        result = generate(self.step, ids, cfg, stop_ids=self.tokenizer.eos_ids, on_token=on_token)
        result.text = self.tokenizer.decode(result.tokens)
        return result
