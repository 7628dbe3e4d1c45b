"""error_line: the one line of a library's exception that goes into a HandheldError message."""

from export.errors import error_line


def test_an_empty_message_gives_the_exception_type_not_an_index_error():
    assert error_line(RuntimeError("")) == "RuntimeError"
    assert error_line(ValueError("\n  \n")) == "ValueError"


def test_first_or_last_non_empty_line_cut_to_the_limit():
    err = RuntimeError("\n  first line\nmiddle\n last line  \n")
    assert error_line(err) == "first line"
    assert error_line(err, last=True) == "last line"
    assert error_line(RuntimeError("x" * 500), 7) == "xxxxxxx"
