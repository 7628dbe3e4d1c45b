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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """SqueezeSAM's tiny-test preset, random weights (odd widths)."""
    from export.sam.config import SAM_PRESETS
    from export.sam.model import build, save_checkpoint

    torch.manual_seed(0)
    model = build(SAM_PRESETS["tiny-test"]).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("sam") / "tiny.pt"
    save_checkpoint(model, path, half=False)
    return path


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, tiny_checkpoint):
    """The tiny model exported once per session to every backend (parity recorded, not enforced:
    a random model's near-zero logits flip under int8 on their own)."""
    from export.config import Backend
    from export.sam.config import SamExportConfig
    from export.sam.export import export_sam

    root = tmp_path_factory.mktemp("sam_artifacts")
    for backend in Backend:
        export_sam(
            SamExportConfig(
                checkpoint=str(tiny_checkpoint), backend=backend, calibration_images=2, enforce_parity=False
            ),
            root / backend.value,
        )
    return root
