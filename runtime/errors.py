"""The one exception type users see: a message naming the problem and the fix."""

from enum import Enum
from typing import Any


class HandheldError(Exception):
    """Bad input or an unusable artifact. The CLI prints `str(err)` alone, no traceback."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)


def error_line(err: BaseException, limit: int = 300, last: bool = False) -> str:
    """One line of a library's exception for a HandheldError message: its first (or last)
    non-empty line, cut to `limit` characters; the exception's type when it says nothing."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return (lines[-1] if last else lines[0])[:limit]


def parse_enum(enum: type[Enum], value: Any, what: str) -> Enum:
    """`value` as a member of `enum`; an unknown value is an error listing the known ones."""
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        known = ", ".join(e.value for e in enum)
        raise HandheldError(f"unknown {what} {value!r}", f"use one of: {known}") from None
