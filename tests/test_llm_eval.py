"""`handheld eval llm` mechanics on a tiny random decoder (SmolLM2's tokenizer, real Wikipedia
splits): every requested row and column is measured, GPTQ rows appear with --gptq, and the
JSON and chart are written."""

import json

import pytest

import export.llm.checkpoint as checkpoint_mod
from export.llm.eval import EvalConfig, gap_ratios, run_eval
from runtime.errors import HandheldError
from tests.longvu_helpers import tiny_checkpoint


def test_eval_table_with_gptq_rows(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(checkpoint_mod, "load_checkpoint", lambda path=None: tiny_checkpoint())
    cfg = EvalConfig(
        out=str(tmp_path),
        n_windows=2,
        seq_len=32,
        schemes=("W4A4KV4", "W4A16g32"),
        methods=("fp", "rtn", "quarot"),
        gptq=True,
        gptq_windows=2,
    )
    result = run_eval(cfg, progress=False)
    table = result["perplexity"]
    assert set(table) == {"rtn", "quarot", "gptq", "quarot+gptq"}
    assert all(set(row) == {"W4A4KV4", "W4A16g32"} for row in table.values())
    assert all(v > 1 for row in table.values() for v in row.values())
    on_disk = json.loads((tmp_path / "eval.json").read_text())
    assert on_disk["perplexity"] == table and on_disk["tokens"] == 2 * 31
    assert (tmp_path / "eval.png").stat().st_size > 1000
    assert "quarot+gptq" in capsys.readouterr().out


def test_gap_ratio_and_bad_config():
    table = {
        "quarot": {"W4A4KV4": 30.0},
        "spinquant": {"W4A4KV4": 20.0},
        "quarot+gptq": {"W4A4KV4": 15.0},
        "spinquant+gptq": {"W4A4KV4": 14.0},
    }
    assert gap_ratios(table, 10.0) == {"W4A4KV4": 0.5}
    assert gap_ratios(table, 10.0, "+gptq") == {"W4A4KV4": 0.8}
    with pytest.raises(HandheldError, match="unknown scheme"):
        EvalConfig(schemes=("W3A3",))
