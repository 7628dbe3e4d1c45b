"""`handheld verify BUNDLE`: schema, checksums, and every file the manifest names is present.

Accepts the bundle folder or its zip. Any problem raises one HandheldError that lists all of
them, so a tampered or half-copied bundle never reaches a phone looking fine.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from functools import cache
from pathlib import Path, PurePosixPath

from export.bundle import contract
from export.bundle.bundle import bundle_digest, missing_companions, missing_keys, named_files
from runtime.errors import HandheldError
from runtime.manifest import sha256_file

SCHEMA_DIR = Path(__file__).parent / "schema"
FIX = "rebuild it with `handheld bundle` (and copy the whole folder or zip again)"


@cache
def load_schema(name: str) -> dict:
    """name: "bundle" or "bench" -> the JSON Schema in export/bundle/schema/."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def schema_errors(document: dict, name: str) -> list[str]:
    """Every JSON Schema violation as 'at <json path>: <message>' (empty when valid)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(load_schema(name))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"at {e.json_path}: {e.message}" for e in errors]


def _read_manifest(folder: Path) -> dict:
    path = folder / contract.BUNDLE_MANIFEST
    if not path.is_file():
        raise HandheldError(
            f"{folder} has no {contract.BUNDLE_MANIFEST}: not a Handheld bundle, or an incomplete copy", FIX
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise HandheldError(f"{path} is not valid JSON ({err})", FIX) from None


def _file_problems(folder: Path, files: dict) -> list[str]:
    problems = []
    for rel, digest in files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"missing {rel}")
        elif sha256_file(path) != digest:
            problems.append(f"checksum mismatch in {rel}")
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    problems += [f"unlisted file {rel}" for rel in sorted(on_disk - set(files) - {contract.BUNDLE_MANIFEST})]
    return problems


def _entry_problems(entry: dict, files: dict, target: str) -> list[str]:
    kind, d = entry["kind"], entry["dir"]
    problems = [f"{d}: lacks {key}" for key in missing_keys(kind, entry)]
    if entry["backend"] not in contract.TARGET_BACKENDS[target][kind]:
        problems.append(f"{d}: the {target} app cannot run {kind} on {entry['backend']}")
    for name in named_files(entry):
        path = f"{d}/{PurePosixPath(name).as_posix()}"
        # a .mlpackage is a folder: it is present when files under it are listed
        if path not in files and not any(f.startswith(path + "/") for f in files):
            problems.append(f"{d}: names {name}, which the bundle does not contain")
    return problems


def verify_folder(folder: Path) -> dict:
    folder = Path(folder)
    bundle = _read_manifest(folder)
    problems = (
        schema_errors(bundle, "bundle")
        if isinstance(bundle, dict)
        else [f"bundle.json is a JSON {type(bundle).__name__}, not an object"]
    )
    if not problems and bundle["bundle_sha256"] != bundle_digest(bundle):
        problems.append("bundle.json was edited after it was written (its bundle_sha256 does not match)")
    if not problems:  # the checks below rely on the shape the schema guarantees
        problems += _file_problems(folder, bundle["files"])
        for entry in bundle["models"]:
            problems += _entry_problems(entry, bundle["files"], bundle["target"])
        present = [(e["kind"], e["backend"]) for e in bundle["models"]]
        problems += [f"the {bundle['target']} app needs {m}" for m in missing_companions(bundle["target"], present)]
        dirs = [e["dir"] for e in bundle["models"]]
        problems += [f"two entries share dir {d}" for d in sorted({d for d in dirs if dirs.count(d) > 1})]
    if problems:
        raise HandheldError(f"bundle {folder} failed verification:\n  - " + "\n  - ".join(problems), FIX)
    return {
        "bundle": str(folder),
        "target": bundle["target"],
        "models": [f"{e['kind']} ({e['backend']})" for e in bundle["models"]],
        "files": len(bundle["files"]),
        "size_bytes": sum(e.get("size_bytes", 0) for e in bundle["models"]),
    }


def verify_bundle(path: Path) -> dict:
    """Verify a bundle folder, or a bundle zip (extracted to a temp folder first)."""
    path = Path(path)
    if path.is_dir():
        return verify_folder(path)
    if not zipfile.is_zipfile(path):
        raise HandheldError(
            f"{path} is neither a bundle folder nor a bundle zip",
            "pass the --out folder of `handheld bundle` or its .zip",
        )
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any(n.startswith("/") or ".." in PurePosixPath(n).parts for n in names):
            raise HandheldError(f"{path} is not a Handheld bundle zip (one top folder, relative paths)", FIX)
        zf.extractall(tmp)
        summary = verify_folder(Path(tmp) / roots.pop())
    return {**summary, "bundle": str(path)}
