"""error_line: the one line of a library's exception that goes into a HandheldError message."""

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
