"""An LLM artifact ready to chat: runner + tokenizer + chat template + generation loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime.context import ContextWindow, Conversation
from runtime.errors import HandheldError
from runtime.generate import GenerationResult, LLMStepper, SamplingConfig, generate
from runtime.runner import open_runner
from runtime.tokenizer import ArtifactTokenizer


class LLMSession:
    def __init__(
        self,
        artifact: Path,
        threads: int | None = None,
        sink_tokens: int | None = None,
        window_tokens: int | None = None,
    ):
        """sink_tokens / window_tokens: override the artifact's context window (runtime/context.py)."""
        from runtime.manifest import load_manifest

        manifest = load_manifest(artifact, verify=False)
        if manifest["kind"] != "llm":
            raise HandheldError(
                f"{artifact} is a {manifest['kind']!r} artifact, not an LLM",
                "pass the --out folder of `handheld export llm`",
            )
        self.window = ContextWindow.from_manifest(manifest, sink_tokens, window_tokens)  # judged before loading
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
        conversation = Conversation(self.step, self.window)  # answers may run past the context
        result = generate(self.step, ids, cfg, self.tokenizer.eos_ids, streaming(self.tokenizer, stream), conversation)
        result.text = self.tokenizer.decode(result.tokens)
        return result

    def chat(self, system: str | None = None) -> Chat:
        return Chat(self, system)


class Chat:
    """A multi-turn conversation on one KV cache: each turn feeds only its new tokens (the
    template's rendering of the new user message after what the cache holds), and the context
    window keeps the conversation going when it outgrows the artifact's context."""

    def __init__(self, session: LLMSession, system: str | None = None):
        self.session = session
        self.conversation = Conversation(session.step, session.window)
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.fed_text = ""  # the text whose tokens went into the cache so far (before any eviction)

    def turn_ids(self, user_text: str) -> tuple[list[int], str]:
        """The tokens a new user turn adds and the whole conversation's rendering up to the
        answer; refused (nothing changes) when the turn alone would not fit in the window."""
        tok, window = self.session.tokenizer, self.session.window
        full = tok.render([*self.messages, {"role": "user", "content": user_text}])
        if self.fed_text and full.startswith(self.fed_text):
            text = full[len(self.fed_text) :]
        elif self.fed_text:  # a template that rewrites history: the new turn on its own
            text = "\n" + tok.render([{"role": "user", "content": user_text}])
        else:
            text = full
        ids = tok.encode(text)
        if not ids:
            raise HandheldError("the message is empty after tokenization", "type some text")
        if len(ids) + 1 > window.window_tokens:
            raise HandheldError(
                f"the message has {len(ids)} tokens, more than the {window.window_tokens} the conversation keeps",
                "send it in shorter parts, or pass a larger --window-tokens",
            )
        return ids, full

    def reply(
        self, user_text: str, cfg: SamplingConfig = SamplingConfig(), stream: Callable[[str], None] | None = None
    ) -> GenerationResult:
        ids, rendered = self.turn_ids(user_text)
        tok = self.session.tokenizer
        result = generate(self.session.step, ids, cfg, tok.eos_ids, streaming(tok, stream), self.conversation)
        result.text = tok.decode(result.tokens)
        self.messages += [{"role": "user", "content": user_text}, {"role": "assistant", "content": result.text}]
        self.fed_text = rendered + result.text
        return result


def streaming(tokenizer: ArtifactTokenizer, stream: Callable[[str], None] | None) -> Callable[[int], None]:
    """on_token for generate(): hands `stream` the new text of each token, holding back
    incomplete UTF-8 sequences."""
    emitted: list[int] = []
    printed = ""

    def on_token(token: int) -> None:
        nonlocal printed
        emitted.append(token)
        decoded = tokenizer.decode(emitted)
        if stream and not decoded.endswith("\ufffd"):
            stream(decoded[len(printed) :])
            printed = decoded

    return on_token
