"""English text for calibration, parity and perplexity, from gensim's test data.

Source: the shortened English Wikipedia dump shipped in gensim's test data, parsed with
gensim's own wiki parser (markup stripped). Articles are split deterministically into
disjoint parts, so rotations calibrated on `calibration` are judged on `evaluation`:

    article index % 10 in 0..6 -> "calibration"
    article index % 10 == 7    -> "parity"      (prompts and windows for artifact checks)
    article index % 10 in 8..9 -> "evaluation"  (held-out perplexity)
"""

from __future__ import annotations

import bz2
import functools
import importlib.util
import re
from pathlib import Path

import torch

from runtime.errors import HandheldError

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
SPLITS = {"calibration": range(0, 7), "parity": range(7, 8), "evaluation": range(8, 10)}
MIN_ARTICLE_CHARS = 400


def _gensim_test_data() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise HandheldError("gensim (the offline text corpus) is not installed", "run `make install`")
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data"


@functools.lru_cache(maxsize=1)
def wikipedia_articles() -> tuple[str, ...]:
    """Plain-text Wikipedia articles (redirects and stubs dropped), in dump order."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    articles = []
    with bz2.open(_gensim_test_data() / WIKI_FILE, "rb") as f:
        for _title, text, _pageid in extract_pages(f):
            if text.lower().startswith("#redirect"):
                continue
            plain = filter_wiki(text)
            plain = re.sub(r"'{2,}", "", plain)  # bold/italic quotes
            plain = re.sub(r"={2,}\s*(.*?)\s*={2,}", r"\n\1\n", plain)  # headings -> own line
            plain = re.sub(r"\(\s*[;,]*\s*\)", "", plain)  # parentheses emptied by the markup filter
            plain = re.sub(r"\n{2,}", "\n", re.sub(r"[ \t]+", " ", plain)).strip()
            if len(plain) >= MIN_ARTICLE_CHARS:
                articles.append(plain)
    return tuple(articles)


def split_text(split: str) -> str:
    """All articles of one split, joined with blank lines."""
    if split not in SPLITS:
        raise HandheldError(f"unknown text split {split!r}", f"use one of {sorted(SPLITS)}")
    keep = SPLITS[split]
    return "\n\n".join(a for i, a in enumerate(wikipedia_articles()) if i % 10 in keep)


def token_windows(tokenizer, split: str, seq_len: int, n_windows: int, stride: int | None = None) -> torch.Tensor:
    """[n, seq_len] int64 windows of the split's token stream, `stride` tokens apart
    (default: evenly spread over the whole split)."""
    ids = tokenizer(split_text(split), return_tensors="pt", add_special_tokens=False).input_ids[0]
    if len(ids) < seq_len * n_windows if stride is None else len(ids) < seq_len + stride * (n_windows - 1):
        raise HandheldError(
            f"the {split} text has {len(ids)} tokens, too few for {n_windows} windows of {seq_len}",
            "ask for fewer or shorter windows",
        )
    step = stride or (len(ids) - seq_len) // max(n_windows - 1, 1)
    return torch.stack([ids[i * step : i * step + seq_len] for i in range(n_windows)])


def parity_prompts(n: int = 4, words: int = 24) -> list[str]:
    """`n` fixed prompts: the opening words of articles in the parity split."""
    arts = [a for i, a in enumerate(wikipedia_articles()) if i % 10 in SPLITS["parity"]]
    return [" ".join(a.split()[:words]) for a in arts[:n]]
