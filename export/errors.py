"""The one exception type users see: a message naming the problem and the fix."""


class HandheldError(Exception):
    """Bad input or an unusable artifact. The CLI prints `str(err)` alone, no traceback."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)
