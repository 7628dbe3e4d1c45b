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
        if not self.chat_template:
            return user_text
        import jinja2

        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user_text}
        ]
        template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(self.chat_template)
        return template.render(
            messages=messages, add_generation_prompt=True, bos_token=self.bos_token, eos_token=self.eos_token
        )
