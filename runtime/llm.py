"""An LLM artifact ready to chat: runner + tokenizer + chat template + generation loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime.errors import HandheldError
from runtime.generate import GenerationResult, LLMStepper, SamplingConfig, generate
from runtime.runner import open_runner
from runtime.tokenizer import ArtifactTokenizer


class LLMSession:
    def __init__(self, artifact: Path, threads: int | None = None):
        from runtime.manifest import load_manifest

        kind = load_manifest(artifact, verify=False)["kind"]
        if kind != "llm":
            raise HandheldError(
                f"{artifact} is a {kind!r} artifact, not an LLM", "pass the --out folder of `handheld export llm`"
            )
        self.runner = open_runner(artifact, threads=threads)
        self.tokenizer = ArtifactTokenizer(artifact, self.runner.manifest["tokenizer"])
        self.step = LLMStepper(self.runner)

    def check_fits(self, prompt: str, cfg: SamplingConfig, chat: bool = True) -> int:
        """The prompt's token count; an error before any compute when it leaves no room to answer."""
        n = len(self.tokenizer.encode(self.tokenizer.chat_prompt(prompt) if chat else prompt))
        if n == 0:
            raise HandheldError("the prompt is empty after tokenization", "pass a --prompt with some text")
        if n + 1 > self.step.max_seq_len:
            raise HandheldError(
                f"the prompt has {n} tokens, the artifact's context holds {self.step.max_seq_len} (prompt + answer)",
                "shorten the prompt or re-export with a larger --max-seq-len",
            )
        return n

    def ask(
        self,
        prompt: str,
        cfg: SamplingConfig = SamplingConfig(),
        chat: bool = True,
        stream: Callable[[str], None] | None = None,
    ) -> GenerationResult:
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
