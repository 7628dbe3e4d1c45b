"""error_line, the tolerance judge and the benchmark worker: the helpers every family shares."""

from pathlib import Path

import pytest

from runtime.errors import error_line


def test_an_empty_message_gives_the_exception_type_not_an_index_error():
    assert error_line(RuntimeError("")) == "RuntimeError"
    assert error_line(ValueError("\n  \n")) == "ValueError"


def test_first_or_last_non_empty_line_cut_to_the_limit():
    err = RuntimeError("\n  first line\nmiddle\n last line  \n")
    assert error_line(err) == "first line"
    assert error_line(err, last=True) == "last line"
    assert error_line(RuntimeError("x" * 500), 7) == "xxxxxxx"


def test_the_tolerance_judge_names_what_missed():
    from export.tolerances import judge

    table = {"cosine": ("min", 0.99), "ratio": ("max", 1.03)}
    assert judge({"cosine": 0.995, "ratio": 1.03}, table) == {"passed": True, "failures": [], "tolerances": table}
    report = judge({"cosine": 0.98, "ratio": 1.1}, table)
    assert not report["passed"] and report["failures"] == ["cosine=0.98 (min 0.99)", "ratio=1.1 (max 1.03)"]


def test_bench_worker_measures_in_its_own_process_and_names_failures(tmp_path):
    """export/worker.py, the one benchmark worker: a result comes back from a fresh interpreter
    (its own peak RSS, far below this test process's), whatever the caller's working directory;
    a failing worker is a HandheldError with its last error line and the fix."""
    import os

    from export.worker import peak_rss_mb, run_worker
    from runtime.errors import HandheldError

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rss = run_worker("export.worker:peak_rss_mb", what="rss", fix="none")
        with pytest.raises(HandheldError) as err:
            run_worker("export.no_such_module:f", Path(tmp_path), 2, what="the thing", fix="do that")
    finally:
        os.chdir(cwd)
    assert 5 < rss < 2000 and rss <= peak_rss_mb()
    assert "benchmark of the thing failed" in str(err.value) and "no_such_module" in str(err.value)
    assert err.value.fix == "do that"
