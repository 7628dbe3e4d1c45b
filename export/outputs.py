"""Output paths: checked before heavy work, replaced only when Handheld wrote them.

Every command that writes calls `check_output` on its output path first, so a bad `--out`
fails in milliseconds with one clear line instead of after minutes of export. Rules:

- the path's first existing ancestor must be a writable folder (not a regular file);
- an existing output is replaced only with `--force`, and even then only when Handheld wrote
  it: an artifact folder whose files are exactly its manifest's, a bundle folder, a report
  folder, or a file Handheld writes (JSON record, PNG). A folder holding anything else is
  never deleted;
- an empty existing folder is written into as if it were absent (nothing can be lost).

Publishing is atomic (a temp folder beside the output, renamed over it at the end), and
`publish_mode` gives published folders the user's umask instead of mkdtemp's 0700.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import HandheldError
from runtime.manifest import MANIFEST, SIDE_FOLDER_PREFIXES, SIDE_OUTPUTS

BUNDLE_MANIFEST = "bundle.json"
# folders of plain files that Handheld writes whole: `handheld report`, `handheld eval llm`
OWN_FILE_SETS = ({"report.png", "report.html"}, {"eval.json", "eval.png"}, {"eval.json", "contact_sheet.png"})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(folder: Path) -> None:
    """Give a published folder (and folders in it) 0777 less the user's umask (mkdtemp makes 0700).

    Files keep the mode they were created with (already 0666 less the umask)."""
    mode = 0o777 & ~_umask()
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(mode)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def foreign_entries(folder: Path) -> list[str]:
    """What in `folder` Handheld did not write (empty: safe to replace). Unknown folder: ['*']."""
    folder = Path(folder)
    entries = sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    if not entries and not any(folder.iterdir()):
        return []
    names = {p.relative_to(folder).as_posix() for p in entries}
    for manifest_name in (MANIFEST, BUNDLE_MANIFEST):
        manifest = _read_json(folder / manifest_name)
        if manifest is None or not isinstance(manifest.get("files"), dict):
            continue
        if manifest_name == MANIFEST and "kind" not in manifest:
            continue
        listed = set(manifest["files"]) | {manifest_name}
        extra = [
            n
            for n in sorted(names - listed)
            if n not in SIDE_OUTPUTS and not n.split("/", 1)[0].startswith(SIDE_FOLDER_PREFIXES)
        ]
        return extra
    if names and any(names <= own for own in OWN_FILE_SETS):
        return []
    # `export --backend all`: a folder of artifact folders, each Handheld's own
    children = [p for p in folder.iterdir()]
    if children and all(p.is_dir() and (p / MANIFEST).is_file() for p in children):
        return [f"{p.name}/{e}" for p in children for e in foreign_entries(p)]
    return sorted(names) or ["(empty folders)"]


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _check_parent(path: Path, flag: str) -> None:
    """`path` as the user wrote it (messages name it so); relative paths end at the cwd."""
    for ancestor in [*path.parents, Path.cwd()] if not path.is_absolute() else path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise HandheldError(
                    f"{flag} {path}: {ancestor} is a file, not a folder", f"choose a {flag} path under a folder"
                )
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise HandheldError(
                    f"{flag} {path}: cannot write in {ancestor} (permission denied)",
                    f"choose a {flag} path in a folder you can write",
                )
            return


def check_output(
    path: Path, *, folder: bool, force: bool = False, flag: str = "--out", suffixes: tuple[str, ...] = ()
) -> Path:
    """Validate an output path before any work; raise HandheldError with the fix, else return it."""
    path = Path(path)
    if str(path) in ("", "."):
        raise HandheldError(
            f"{flag} must name a new {'folder' if folder else 'file'}, not the current folder", f"pass e.g. {flag} out"
        )
    if suffixes and path.suffix.lower() not in suffixes:
        raise HandheldError(
            f"{flag} {path}: expected a {' or '.join(suffixes)} file",
            f"name it e.g. {path.with_suffix(suffixes[0]).name}",
        )
    _check_parent(path, flag)
    if not (path.exists() or path.is_symlink()):
        return path
    if path.is_symlink():
        raise HandheldError(f"{flag} {path} is a symbolic link", f"pass the real path, or a new {flag}")
    if folder:
        if not path.is_dir():
            raise HandheldError(
                f"{flag} {path} is an existing file, Handheld writes a folder there",
                f"choose a new {flag} folder, or move the file away",
            )
        if is_empty_dir(path):
            return path
        foreign = foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise HandheldError(
                f"{flag} {path} holds files Handheld did not write ({shown}); Handheld never deletes them, not even with --force",
                f"choose a new {flag} folder, or move those files away yourself",
            )
    elif path.is_dir():
        raise HandheldError(
            f"{flag} {path} is a folder, Handheld writes a file there",
            f"pass a file path, e.g. {path / 'out'}{suffixes[0] if suffixes else ''}",
        )
    if not force:
        raise HandheldError(f"{flag} {path} already exists", "pass --force to replace it, or choose another path")
    return path


def check_distinct(out: Path, inputs: list[Path], flag: str = "--out") -> None:
    """Refuse an output that is, holds, or sits inside one of the inputs."""
    o = Path(out).resolve()
    for i in inputs:
        r = Path(i).resolve()
        if o == r or r in o.parents or o in r.parents:
            raise HandheldError(f"{flag} {out} overlaps the input {i}", f"write to a {flag} outside every input folder")


@contextlib.contextmanager
def atomic_dir(out: Path, *, done: str | None = None) -> Iterator[Path]:
    """Yield a temp folder beside `out`; rename it over `out` only when the block succeeds.

    `done`: a file the finished folder must hold (its manifest). An existing `out` is replaced
    only when Handheld wrote it (see `foreign_entries`); an interrupted block (exception,
    Ctrl-C, SIGTERM through the CLI's handler) leaves nothing behind.
    """
    out = Path(out).resolve()
    _check_parent(out, "output")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if done and not (tmp / done).exists():
            raise RuntimeError(f"output folder finished without {done}")
        publish_mode(tmp)
        if out.exists() or out.is_symlink():
            if out.is_symlink() or not out.is_dir():
                raise HandheldError(
                    f"{out} is not a folder Handheld wrote; it was left as it is", "choose another output path"
                )
            foreign = foreign_entries(out) if not is_empty_dir(out) else []
            if foreign:
                raise HandheldError(
                    f"{out} holds files Handheld did not write ({', '.join(foreign[:3])}); it was left as it is",
                    "choose another output folder, or move those files away yourself",
                )
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_file(out: Path):
    """A temp path beside `out` (context manager); renamed to `out` when the block succeeds."""
    return _AtomicFile(Path(out))


class _AtomicFile:
    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.tmp.chmod(0o666 & ~_umask())
                os.replace(self.tmp, self.out)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def write_text_atomic(out: Path, text: str) -> Path:
    with atomic_file(out) as tmp:
        tmp.write_text(text)
    return Path(out)
