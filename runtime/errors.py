"""The one exception type users see: a message naming the problem and the fix."""


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
