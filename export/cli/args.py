"""Argument types and checks shared by every command: each bad value becomes one
`handheld: error: ...` line with its fix, exit code 2, before any heavy work starts."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from runtime.errors import HandheldError

MAX_THREADS = 64  # XNNPACK/onnxruntime pools far past the core count crash (100000: segfault)
MAX_TEXT_CHARS = 8192  # a prompt or question; the context decides the rest in tokens


class HandheldParser(argparse.ArgumentParser):
    """argparse whose errors read like every other Handheld error (no usage block)."""

    def error(self, message: str):
        fix = "" if "\n  fix: " in message else f"\n  fix: see `{self.prog} --help`"
        sys.stderr.write(f"handheld: error: {message}{fix}\n")
        sys.exit(2)


def _bad(problem: str, fix: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{problem}\n  fix: {fix}")


def int_range(lo: int, hi: int | None = None, what: str = "a whole number"):
    """An int type in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _bad(
                f"{text!r} is not {what}", f"pass a whole number {lo}..{hi}" if hi else f"pass a whole number >= {lo}"
            ) from None
        if value < lo or (hi is not None and value > hi):
            raise _bad(f"{value} is out of range", f"pass {lo}..{hi}" if hi is not None else f"pass a number >= {lo}")
        return value

    return parse


def float_range(lo: float, hi: float | None = None, lo_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _bad(f"{text!r} is not a number", "pass a decimal number, e.g. 0.5") from None
        below = value <= lo if lo_open else value < lo
        if not math.isfinite(value) or below or (hi is not None and value > hi):
            span = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
            raise _bad(f"{text} is out of range", f"pass a number in {span}")
        return value

    return parse


def thread_counts(text: str) -> tuple[int, ...]:
    """'1,2' -> (1, 2): each 1..MAX_THREADS, no blanks, no repeats."""
    parts = text.split(",")
    try:
        counts = tuple(int(p) for p in parts)
    except ValueError:
        raise _bad(
            f"{text!r} is not a list of thread counts", "pass whole numbers separated by commas, e.g. --threads 1,2"
        ) from None
    if any(c < 1 or c > MAX_THREADS for c in counts):
        raise _bad(f"thread counts {text} out of range", f"pass counts 1..{MAX_THREADS}, e.g. --threads 1,2")
    if len(set(counts)) != len(counts):
        raise _bad(f"{text!r} repeats a thread count", "list each thread count once")
    return counts


def thread_count(text: str) -> int:
    return int_range(1, MAX_THREADS, "a thread count")(text)


def text_arg(what: str, max_chars: int = MAX_TEXT_CHARS):
    """Non-empty text that is valid Unicode (argv bytes that are not UTF-8 arrive as surrogates)."""

    def parse(text: str) -> str:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(
                f"the {what} is not valid UTF-8 text",
                f"pass the {what} as UTF-8 (check the terminal's or file's encoding)",
            ) from None
        if not text.strip():
            raise _bad(f"the {what} is empty", f"pass a {what} with some text")
        if len(text) > max_chars:
            raise _bad(f"the {what} has {len(text)} characters", f"keep it under {max_chars} characters")
        return text

    return parse


def existing_path(what: str, *, folder: bool | None = None):
    """A path that exists (folder=True: a folder, False: a file, None: either)."""

    def parse(text: str) -> Path:
        path = Path(text).expanduser()
        if not path.exists():
            raise _bad(f"{what} {path} does not exist", f"pass an existing {what}")
        if folder is True and not path.is_dir():
            raise _bad(f"{what} {path} is a file, not a folder", f"pass the {what} folder")
        if folder is False and not path.is_file():
            raise _bad(f"{what} {path} is a folder, not a file", f"pass the {what} file")
        return path

    return parse


def add_force(parser: argparse.ArgumentParser, what: str = "--out") -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"replace an existing {what} that Handheld wrote (never a folder holding other files)",
    )


def artifact_dir(text: str) -> Path:
    """An artifact folder: exists, is a folder, has a manifest (checked fully when loaded)."""
    path = Path(text).expanduser()
    if not path.exists():
        raise _bad(f"artifact folder {path} does not exist", "pass the --out folder of `handheld export`")
    if not path.is_dir():
        raise _bad(
            f"{path} is a file, not an artifact folder",
            "pass the folder `handheld export` wrote (the one holding manifest.json)",
        )
    return path


def check(condition: bool, problem: str, fix: str) -> None:
    if not condition:
        raise HandheldError(problem, fix)


def arm_kernel_families(text: str) -> tuple[str, ...]:
    """'dotprod,i8mm' -> ('dotprod', 'i8mm'): the phone int8 kernel families the aarch64 lane emulates."""
    from export.arm.lane import FAMILIES

    parts = tuple(text.split(","))
    unknown = [p for p in parts if p not in FAMILIES]
    if unknown or not parts:
        raise _bad(f"unknown kernel family {', '.join(map(repr, unknown))}", f"pass some of {','.join(FAMILIES)}")
    if len(set(parts)) != len(parts):
        raise _bad(f"{text!r} repeats a kernel family", "list each family once")
    return parts
