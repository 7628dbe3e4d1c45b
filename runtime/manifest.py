"""Reading an artifact's manifest.json, as every runner (and the phone apps) must.

An artifact folder holds model files, tokenizer files and `manifest.json`: format version,
kind, config, input/output specs, preprocessing, the sha256 of every other file (and of the
manifest itself), toolchain versions and parity numbers. Readers check the manifest's shape
and every checksum, so a tampered or truncated artifact fails loudly instead of producing
garbage. Writing lives in export/manifest.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from runtime.errors import HandheldError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# files Handheld writes into an artifact folder after export (`handheld bench`'s default record,
# phone results): they are not listed in the manifest and do not make the folder foreign
SIDE_OUTPUTS = ("bench.json", "profile.json")  # `handheld bench` and `bench --profile` write these beside the artifact
SIDE_FOLDER_PREFIXES = ("device-",)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


KINDS = ("llm", "sam", "longvu")
DIGEST = "manifest_sha256"
_HEX = set("0123456789abcdef")


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its own digest: an edited manifest
    (a file entry removed, max_seq_len or eos ids changed) no longer matches."""
    body = {k: v for k, v in manifest.items() if k != DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _bad(path: Path, problem: str) -> HandheldError:
    return HandheldError(
        f"{path} {problem}",
        "re-export the artifact with `handheld export ...`; Handheld will not run a damaged or edited artifact",
    )


def confined(rel: object) -> bool:
    """A relative POSIX path that stays inside its folder."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    parts = PurePosixPath(rel).parts
    return not PurePosixPath(rel).is_absolute() and ".." not in parts and parts[0] not in ("~",)


def named_files(manifest: dict) -> list[str]:
    """Every file (or .mlpackage folder) the manifest tells a runner to open."""
    names = [manifest.get("model_file")]
    tokenizer = manifest.get("tokenizer")
    if isinstance(tokenizer, dict):
        names.append(tokenizer.get("file"))
    for key in ("methods", "variants"):
        entries = manifest.get(key)
        if isinstance(entries, dict):
            names += [e.get("file") for e in entries.values() if isinstance(e, dict) and "file" in e]
    teacher = manifest.get("teacher")
    if isinstance(teacher, dict) and isinstance(teacher.get("files"), dict):
        names += list(teacher["files"].values())
    return [n for n in names if n is not None]


def _covered(name: str, files: dict) -> bool:
    return name in files or any(rel.startswith(name.rstrip("/") + "/") for rel in files)


def check_structure(path: Path, manifest: object) -> dict:
    """The manifest's shape, before any key is read (a list, a missing kind, a bad file map)."""
    if not isinstance(manifest, dict):
        raise _bad(path, f"is a JSON {type(manifest).__name__}, not a manifest object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise HandheldError(
            f"{path} has format version {manifest.get('format_version')}, this Handheld reads {FORMAT_VERSION}",
            "re-export the artifact with this version of Handheld",
        )
    if manifest.get("kind") not in KINDS:
        raise _bad(path, f"has kind {manifest.get('kind')!r}; Handheld artifacts are {', '.join(KINDS)}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise _bad(path, "lists no files with checksums")
    for rel, digest in files.items():
        if not confined(rel):
            raise _bad(path, f"lists a file outside its folder: {rel!r}")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            raise _bad(path, f"has no valid sha256 for {rel}")
    for name in named_files(manifest):
        if not confined(name):
            raise _bad(path, f"names a file outside its folder: {name!r}")
        if not _covered(name, files):
            raise _bad(path, f"names {name} without a checksum for it")
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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HandheldError(
            f"{path} is not valid JSON ({err})", "re-run the export; the manifest was damaged"
        ) from None
    check_structure(path, manifest)
    if verify:
        if manifest.get(DIGEST) != manifest_digest(manifest):
            raise _bad(
                path,
                "was edited after export (its manifest_sha256 does not match)"
                if DIGEST in manifest
                else "has no manifest_sha256 (an older Handheld, or edited)",
            )
        verify_checksums(folder, manifest)
    return manifest


def verify_checksums(folder: Path, manifest: dict) -> None:
    problems = []
    for name, expected in manifest["files"].items():
        path = Path(folder) / name
        if not path.is_file() or path.is_symlink():
            problems.append(f"missing {name}")
        elif sha256_file(path) != expected:
            problems.append(f"checksum mismatch in {name}")
    on_disk = {p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file() or p.is_symlink()}
    unlisted = sorted(
        rel
        for rel in on_disk - set(manifest["files"]) - {MANIFEST}
        if rel not in SIDE_OUTPUTS and not rel.split("/", 1)[0].startswith(SIDE_FOLDER_PREFIXES)
    )
    problems += [f"unlisted file {rel}" for rel in unlisted]
    if problems:
        raise HandheldError(
            f"artifact {folder} is corrupted or was modified: {'; '.join(problems)}",
            "re-export it (or copy it again completely); Handheld will not run a tampered artifact",
        )
