"""`handheld bundle`: verified artifacts -> an app-ready folder and zip, published atomically.

Layout of a bundle (BUNDLE is --out):

    BUNDLE/bundle.json               one manifest: target, one entry per artifact, sha256 of every file
    BUNDLE/<kind>-<backend>/...      the artifact's files, paths as its manifest names them
    BUNDLE.zip                       the same tree under BUNDLE's name, for `adb push` / Files app

An entry is the artifact's manifest without its file list, plus `dir`. Nothing is renamed, so
the keys an app reads are the keys the exporter wrote (see contract.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import shutil
import time
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from export.bundle import contract
from export.config import parse_enum
from export.outputs import atomic_dir, atomic_file
from runtime.errors import HandheldError
from runtime.manifest import load_manifest


class Target(str, Enum):
    ANDROID = "android"
    IOS = "ios"


# Already-compressed payloads go into the zip stored; deflating a 100 MB .pte gains little.
DEFLATE_SUFFIXES = (".json", ".txt", ".model", ".jinja")


@dataclass(frozen=True)
class BundleConfig:
    target: Target
    out: Path
    artifacts: tuple[Path, ...]
    make_zip: bool = True

    def __post_init__(self):
        object.__setattr__(self, "target", parse_enum(Target, self.target, "bundle target"))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "artifacts", tuple(Path(a) for a in self.artifacts))
        if not self.artifacts:
            raise HandheldError("no artifacts to bundle", "pass one or more artifact folders made by `handheld export`")


def missing_keys(kind: str, manifest: dict) -> list[str]:
    """Contract key paths absent from an artifact manifest (tensor and method names included)."""
    missing = [path for path in contract.required_paths(kind) if not _has_path(manifest, path)]
    if kind in contract.IO_NAMES and not missing:
        want_in, want_out = contract.IO_NAMES[kind]
        got_in, got_out = _io_names(manifest["inputs"]), _io_names(manifest["outputs"])
        if got_in[: len(want_in)] != want_in:
            missing.append(f"inputs named {list(want_in)} (found {list(got_in)})")
        if got_out[: len(want_out)] != want_out:
            missing.append(f"outputs named {list(want_out)} (found {list(got_out)})")
    if kind == "longvu" and "methods" not in missing:
        methods = manifest["methods"] if isinstance(manifest["methods"], dict) else {}
        for method, (want_in, want_out) in contract.LONGVU_IO.items():
            spec = methods.get(method)
            if not isinstance(spec, dict) or any(key not in spec for key in contract.METHOD_KEYS):
                missing.append(f"methods.{method}.inputs/outputs")
                continue
            got = (_io_names(spec["inputs"]), _io_names(spec["outputs"]))
            if got != (want_in, want_out):
                missing.append(
                    f"methods.{method} named {list(want_in)} -> {list(want_out)} (found {list(got[0])} -> {list(got[1])})"
                )
    return missing


def missing_companions(target: str, present: list[tuple[str, str]]) -> list[str]:
    """Entries the target's app needs beside the ones given (contract.TARGET_COMPANIONS)."""
    return [
        f"a {need[0]} {need[1]} artifact beside the {have[0]} {have[1]} one"
        for have, need in contract.TARGET_COMPANIONS[target].items()
        if have in present and need not in present
    ]


def _io_names(specs) -> tuple:
    return (
        tuple(spec.get("name") if isinstance(spec, dict) else None for spec in specs) if isinstance(specs, list) else ()
    )


def _covers(rel: str, name: str) -> bool:
    """Is file `rel` the named file, or inside the named folder (an .mlpackage)?"""
    name = name.rstrip("/")
    return rel == name or rel.startswith(name + "/")


def _has_path(obj: dict, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return False
        obj = obj[key]
    return True


def named_files(entry: dict) -> list[str]:
    """Files (or .mlpackage folders) an entry names, relative to the entry's dir."""
    names = [entry[key] for key in ("model_file",) if key in entry]
    if isinstance(entry.get("tokenizer"), dict) and "file" in entry["tokenizer"]:
        names.append(entry["tokenizer"]["file"])
    names += sorted({m["file"] for m in entry.get("methods", {}).values() if isinstance(m, dict) and "file" in m})
    return names


def app_files(manifest: dict) -> list[str]:
    """The artifact files an app loads: those the contract keys name (a .mlpackage with all it holds).

    Everything else (fp32 variants, bench baselines, reports) stays out of the phone bundle and
    is listed in the entry's `omitted_files`.
    """
    named = named_files(manifest)
    return [rel for rel in manifest["files"] if any(_covers(rel, n) for n in named)]


def _check_artifact(path: Path, target: Target) -> dict:
    manifest = load_manifest(path, verify=True)
    kind, backend = manifest.get("kind"), manifest.get("backend")
    if kind not in contract.KINDS:
        raise HandheldError(
            f"{path} is a {kind!r} artifact; bundles hold {', '.join(contract.KINDS)}",
            "pass artifact folders from `handheld export llm|sam|longvu`",
        )
    allowed = contract.TARGET_BACKENDS[target.value][kind]
    if backend not in allowed:
        raise HandheldError(
            f"{path}: the {target.value} app runs {kind} on {' or '.join(allowed)}, this artifact is {backend}",
            f"export it with `handheld export {kind} --backend {allowed[0]}`",
        )
    missing = missing_keys(kind, manifest)
    missing += [
        f"{name} (named, but not among its files)"
        for name in named_files(manifest)
        if not any(_covers(rel, name) for rel in manifest["files"])
    ]
    if missing:
        raise HandheldError(
            f"{path}: the {kind} manifest lacks what the phone apps read: {', '.join(missing)}",
            "re-export it with this version of Handheld (keys: export/bundle/contract.py)",
        )
    return manifest


def _write_zip(folder: Path, zip_path: Path, root: str) -> None:
    """The folder's tree under `root/` (the published bundle's name)."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            method = zipfile.ZIP_DEFLATED if path.suffix in DEFLATE_SUFFIXES else zipfile.ZIP_STORED
            zf.write(path, f"{root}/{rel}", compress_type=method)


def _handheld_version() -> str:
    try:
        return importlib.metadata.version("handheld")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_bundle(cfg: BundleConfig) -> dict:
    """Check every artifact against the app contract, copy it in, write bundle.json (+ zip)."""
    manifests = [(path, _check_artifact(path, cfg.target)) for path in cfg.artifacts]
    dirs = [f"{m['kind']}-{m['backend']}" for _, m in manifests]
    for d in set(dirs):
        if dirs.count(d) > 1:
            raise HandheldError(f"two {d} artifacts given", "bundle one artifact per model kind and backend")
    missing = missing_companions(cfg.target.value, [(m["kind"], m["backend"]) for _, m in manifests])
    if missing:
        raise HandheldError(
            f"the {cfg.target.value} app needs {'; '.join(missing)}", "add the missing artifact to the command"
        )
    models, files = [], {}
    out = cfg.out.resolve()
    # the zip is written complete (from the checked temp folder) before the folder is renamed
    # into place, and renamed itself after it: an interrupt leaves neither half-done
    zip_ctx = atomic_file(zip_path(out)) if cfg.make_zip else contextlib.nullcontext()
    with zip_ctx as zip_tmp, atomic_dir(cfg.out, done=contract.BUNDLE_MANIFEST) as tmp:
        for (src, manifest), d in zip(manifests, dirs):
            shipped = app_files(manifest)
            for rel in shipped:
                dest = tmp / d / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / rel, dest)
                files[f"{d}/{rel}"] = manifest["files"][rel]
            entry = {k: v for k, v in manifest.items() if k != "files"}
            size = sum((src / rel).stat().st_size for rel in shipped)
            omitted = sorted(set(manifest["files"]) - set(shipped))
            models.append({**entry, "dir": d, "size_bytes": size, **({"omitted_files": omitted} if omitted else {})})
        bundle = {
            "bundle_format_version": contract.BUNDLE_FORMAT_VERSION,
            "target": cfg.target.value,
            "created_unix": int(time.time()),
            "handheld_version": _handheld_version(),
            "models": models,
            "files": files,
        }
        bundle["bundle_sha256"] = bundle_digest(bundle)
        (tmp / contract.BUNDLE_MANIFEST).write_text(json.dumps(bundle, indent=2) + "\n")
        from export.bundle.verify import verify_folder

        verify_folder(tmp)  # the bundle must pass its own check before it is published
        if zip_tmp is not None:
            _write_zip(tmp, zip_tmp, out.name)
    return bundle


def bundle_digest(bundle: dict) -> str:
    """sha256 of bundle.json's canonical JSON without its own digest (see bundle.schema.json)."""
    body = {k: v for k, v in bundle.items() if k != "bundle_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def zip_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".zip")
