"""Artifact folders: written atomically, described by a versioned manifest.json.

An artifact folder holds model files, tokenizer files and `manifest.json`:
format version, kind, config, input/output specs, preprocessing, the sha256 of every
other file, toolchain versions and parity numbers. Readers verify checksums, so a
tampered or truncated artifact fails loudly instead of producing garbage.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from export.errors import HandheldError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOOLCHAIN = ("torch", "executorch", "torchao", "coremltools", "onnx", "onnxruntime", "transformers", "numpy")


def toolchain_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLCHAIN:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_checksums(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files}


def atomic_artifact_dir(out: Path):
    """Yield a temp folder beside `out`; rename it to `out` only if the block succeeds.

    An interrupted export leaves nothing at `out` that looks complete, and an existing `out`
    is replaced only when Handheld wrote it (export/outputs.py).
    """
    from export.outputs import atomic_dir

    return atomic_dir(out, done=MANIFEST)


def write_manifest(folder: Path, kind: str, **fields: Any) -> dict:
    """Write manifest.json for every file now in `folder` (call it last)."""
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created_unix": int(time.time()),
        "toolchain": toolchain_versions(),
        **fields,
        "files": _file_checksums(Path(folder)),
    }
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def load_manifest(folder: Path, verify: bool = True) -> dict:
    """Read an artifact's manifest, checking format version and (optionally) every checksum."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise HandheldError(f"artifact folder {folder} does not exist", "pass the --out folder of `handheld export`")
    if not path.is_file():
        raise HandheldError(
            f"{folder} has no {MANIFEST}: not a Handheld artifact, or an export that did not finish",
            "re-run `handheld export ...` into this folder",
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HandheldError(f"{path} is not valid JSON ({err})", "re-run the export; the manifest was damaged") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise HandheldError(
            f"{path} has format version {manifest.get('format_version')}, this Handheld reads {FORMAT_VERSION}",
            "re-export the artifact with this version of Handheld",
        )
    if verify:
        verify_checksums(folder, manifest)
    return manifest


def verify_checksums(folder: Path, manifest: dict) -> None:
    problems = []
    for name, expected in manifest.get("files", {}).items():
        path = Path(folder) / name
        if not path.is_file():
            problems.append(f"missing {name}")
        elif sha256_file(path) != expected:
            problems.append(f"checksum mismatch in {name}")
    if problems:
        raise HandheldError(
            f"artifact {folder} is corrupted or was modified: {'; '.join(problems)}",
            "re-export it (or copy it again completely); Handheld will not run a tampered artifact",
        )


def update_manifest(folder: Path, **fields: Any) -> dict:
    """Merge `fields` into an existing manifest (e.g. parity numbers), keeping checksums."""
    manifest = load_manifest(folder, verify=False)
    manifest.update(fields)
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
