"""The artifact's tokenizer: HF `tokenizer.json` plus the chat template from the manifest."""

from __future__ import annotations

from pathlib import Path

from runtime.errors import HandheldError


class ArtifactTokenizer:
    def __init__(self, artifact: Path, spec: dict):
        from tokenizers import Tokenizer

        path = Path(artifact) / spec["file"]
        if not path.is_file():
            raise HandheldError(f"tokenizer file {path} is missing", "re-export the artifact")
        self.tok = Tokenizer.from_file(str(path))
        self.bos_id = spec.get("bos_id")
        self.eos_ids = tuple(spec.get("eos_ids", ()))
        self.chat_template = spec.get("chat_template")
        self.bos_token = spec.get("bos_token", "")
        self.eos_token = spec.get("eos_token", "")

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def chat_prompt(self, user_text: str, system: str | None = None) -> str:
        """Render the checkpoint's chat template for one user turn (plain text when there is none)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user_text}
        ]
        return self.render(messages)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """A whole conversation ({"role", "content"} dicts) through the chat template; without a
        template, the contents one per line."""
        if not self.chat_template:
            return "\n".join(m["content"] for m in messages) + ("\n" if len(messages) > 1 else "")
        import jinja2

        template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(self.chat_template)
        return template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
