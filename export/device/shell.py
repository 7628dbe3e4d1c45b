"""Running device tools (adb, xcrun): resolved on PATH, failures become HandheldErrors."""

from __future__ import annotations

import shutil
import subprocess

from runtime.errors import HandheldError


def find_tool(name: str, fix: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HandheldError(f"`{name}` is not on PATH", fix)
    return path


def run_tool(argv: list[str], what: str, timeout_s: float = 600.0) -> str:
    """Run argv, return stdout; a non-zero exit or a timeout raises with the tool's own words."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise HandheldError(
            f"{what} did not finish within {timeout_s:.0f} s", "check the device screen / logs and retry"
        ) from None
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise HandheldError(
            f"{what} failed (exit {proc.returncode}): {' | '.join(said)}",
            "check the device connection and the command above",
        )
    return proc.stdout
