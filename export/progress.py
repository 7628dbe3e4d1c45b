"""Handheld's own progress bars. Without --verbose the CLI sets TQDM_DISABLE=1, which silences
the libraries' bars (coremltools' converter passes, transformers' GGUF loading); Handheld's
bars pass `disable` explicitly, so they still show (and a caller's own `disable=` still wins)."""

from __future__ import annotations

from tqdm import tqdm as _tqdm


def tqdm(*args, **kwargs):
    kwargs.setdefault("disable", False)
    return _tqdm(*args, **kwargs)
