"""Writing artifact folders: atomically, described by a versioned manifest.json.

What the manifest holds and how it is read and verified: runtime/manifest.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path
from typing import Any

from runtime.manifest import DIGEST, FORMAT_VERSION, MANIFEST, load_manifest, manifest_digest, sha256_file

TOOLCHAIN = ("torch", "executorch", "torchao", "coremltools", "onnx", "onnxruntime", "transformers", "numpy")


def toolchain_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLCHAIN:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


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


def rewrite_manifest(folder: Path, manifest: dict) -> dict:
    """Write `manifest` into `folder` with a fresh manifest_sha256 (an exporter's last word)."""
    manifest = {k: v for k, v in manifest.items() if k != DIGEST}
    manifest[DIGEST] = manifest_digest(manifest)
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


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
    return rewrite_manifest(folder, manifest)


def update_manifest(folder: Path, **fields: Any) -> dict:
    """Merge `fields` into an existing manifest (e.g. parity numbers), keeping checksums. A new
    host parity report keeps the aarch64 lane's (`parity.aarch64`, measured on the same files:
    a re-export writes a new manifest)."""
    manifest = load_manifest(folder, verify=False)
    old = manifest.get("parity")
    new = fields.get("parity")
    if isinstance(old, dict) and isinstance(new, dict) and "aarch64" in old and "aarch64" not in new:
        fields["parity"] = {**new, "aarch64": old["aarch64"]}
    manifest.update(fields)
    return rewrite_manifest(folder, manifest)
