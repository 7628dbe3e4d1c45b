"""Shared pieces for the LLM backend tests: tiny random decoders exported through the real
pipeline with the tokenizer stubbed, and the real SmolLM2 exported once per module."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from export.config import LLMExportConfig, LLMQuantConfig
from export.llm.model import Llama
from tests.conftest import tiny_llama_args


def tiny_decoder(**overrides) -> Llama:
    """A seeded random decoder with non-trivial norm gammas."""
    torch.manual_seed(0)
    model = Llama(tiny_llama_args(**overrides)).eval().requires_grad_(False)
    for p in model.parameters():
        if p.dim() == 1:
            p.data.uniform_(0.5, 1.5)
    return model


class TinyCheckpoint:
    """Stands in for a loaded checkpoint: the real tokenizer is not needed for mechanics."""

    def __init__(self, model):
        self.model, self.family, self.source, self.bos_id, self.eos_ids = model, "llama", "tiny-random", 1, (2,)


def random_calibration(model: Llama, n: int = 4, seq_len: int = 24, seed: int = 5) -> torch.Tensor:
    return torch.randint(0, model.args.vocab_size, (n, seq_len), generator=torch.Generator().manual_seed(seed))


def export_tiny(
    model: Llama,
    out: Path,
    backend: str,
    quantizer,
    quant: LLMQuantConfig = LLMQuantConfig(),
    max_seq_len: int = 40,
    **quant_kwargs,
):
    """Through the real pipeline (PreparedModel -> LLM_RECIPES[backend] -> manifest), the
    tokenizer stubbed. `quantizer(model, quant, **quant_kwargs)` simulates the backend's
    quantization on a copy of `model` (the float model stays the backend's input)."""
    import export.llm.pipeline as pipeline
    from export.llm.wrapper import CachedDecoder

    quant = quant.for_backend(backend)  # as prepare_model does
    cfg = LLMExportConfig(backend=backend, max_seq_len=max_seq_len, quant=quant, rotation="none")
    simulated = copy.deepcopy(model)
    report = quantizer(simulated, quant, **quant_kwargs)
    prepared = pipeline.PreparedModel(
        TinyCheckpoint(model), simulated, CachedDecoder(simulated, max_seq_len).eval(), report, model, quant
    )
    return out, stub_tokenizer_export(cfg, prepared, out), prepared


def stub_tokenizer_export(cfg: LLMExportConfig, prepared, out: Path) -> dict:
    """`export_prepared` without parity, writing an empty tokenizer file."""
    import export.llm.pipeline as pipeline

    save = pipeline._save_tokenizer
    pipeline._save_tokenizer = lambda ck, folder: (
        (folder / "tokenizer.json").write_text("{}") and {"file": "tokenizer.json", "eos_ids": [2]}
    )
    try:
        return pipeline.export_prepared(cfg, prepared, out, check_parity=False)
    finally:
        pipeline._save_tokenizer = save


def export_smollm2(tmp_path_factory, smollm2, cfg: LLMExportConfig, name: str):
    """The real SmolLM2 prepared and exported with `cfg` (no parity run): (folder, manifest, prepared)."""
    from export.llm import pipeline

    prepared = pipeline.prepare_model(cfg, checkpoint=smollm2)
    out = tmp_path_factory.mktemp(name) / name
    return out, pipeline.export_prepared(cfg, prepared, out, check_parity=False), prepared
