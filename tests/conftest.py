"""Shared fixtures. Real offline models are loaded/exported once per session (cached)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: see export/cli main()

import pytest
import torch

from export.cli import quiet_toolchain_logs

quiet_toolchain_logs()


@pytest.fixture(scope="session")
def smollm2():
    """The offline SmolLM2-135M-Instruct checkpoint (real weights)."""
    from export.llm.checkpoint import load_checkpoint

    return load_checkpoint()


@pytest.fixture(scope="session")
def smollm2_artifact(tmp_path_factory, smollm2):
    """SmolLM2 exported once per session to ExecuTorch 8da4w, parity checked during export."""
    from export.config import LLM_PRESETS
    from export.llm import pipeline

    out = tmp_path_factory.mktemp("smollm2") / "llm"
    cfg = LLM_PRESETS["smollm2-8da4w"]
    prepared = pipeline.prepare_model(cfg, checkpoint=smollm2)
    manifest = pipeline.export_prepared(cfg, prepared, out)
    return out, manifest, prepared


def tiny_llama_args(**overrides):
    from export.llm.model import LlamaArgs

    base = dict(
        vocab_size=133, dim=96, n_layers=2, n_heads=6, n_kv_heads=2, head_dim=16, ffn_dim=160, rope_theta=10000.0
    )
    return LlamaArgs(**{**base, **overrides})


@pytest.fixture
def tiny_llama():
    from export.llm.model import Llama

    torch.manual_seed(0)
    model = Llama(tiny_llama_args()).eval()
    for p in model.parameters():  # non-trivial norms so fusion/quantization bugs show up
        if p.dim() == 1:
            p.data.uniform_(0.5, 1.5)
    return model.requires_grad_(False)
