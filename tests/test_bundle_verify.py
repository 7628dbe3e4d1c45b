"""`handheld verify`: tampered, incomplete or malformed bundles fail with one clear message."""

import json
import zipfile

import bundle_fakes as fakes
import pytest

from export.bundle import contract
from export.bundle.bundle import BundleConfig, build_bundle, bundle_digest
from export.bundle.verify import verify_bundle
from export.cli import main
from runtime.errors import HandheldError


@pytest.fixture
def bundle(tmp_path):
    arts = (fakes.make_llm(tmp_path), fakes.make_sam(tmp_path), fakes.make_longvu(tmp_path))
    out = tmp_path / "android"
    build_bundle(BundleConfig(target="android", out=out, artifacts=arts))
    return out


def edit_manifest(bundle, change, resign=True):
    """Change bundle.json; resign=True re-signs it as a (buggy) bundler would have written it."""
    path = bundle / contract.BUNDLE_MANIFEST
    doc = json.loads(path.read_text())
    change(doc)
    if resign and "bundle_sha256" in doc:
        doc["bundle_sha256"] = bundle_digest(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["models"][0].update(max_seq_len=4096),
        lambda d: d["models"][0]["tokenizer"].update(eos_ids=[0]),
        lambda d: d["models"].append(dict(d["models"][0])),
        lambda d: d.update(target="ios"),
    ],
)
def test_a_hand_edited_bundle_json_fails(bundle, change):
    edit_manifest(bundle, change, resign=False)
    with pytest.raises(HandheldError, match="bundle.json was edited after it was written"):
        verify_bundle(bundle)


def test_fresh_bundle_and_its_zip_verify(bundle):
    summary = verify_bundle(bundle)
    assert summary["models"] == ["llm (executorch)", "sam (executorch)", "longvu (executorch)"]
    assert verify_bundle(bundle.with_name("android.zip"))["files"] == summary["files"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda b: (b / "llm-executorch/model.pte").write_bytes(b"tampered"),
            "checksum mismatch in llm-executorch/model.pte",
        ),
        (lambda b: (b / "sam-executorch/model.pte").unlink(), "missing sam-executorch/model.pte"),
        (lambda b: (b / "llm-executorch/extra.bin").write_bytes(b"?"), "unlisted file llm-executorch/extra.bin"),
        (lambda b: (b / contract.BUNDLE_MANIFEST).unlink(), "has no bundle.json"),
        (lambda b: (b / contract.BUNDLE_MANIFEST).write_text("{"), "is not valid JSON"),
    ],
)
def test_damaged_files_fail(bundle, damage, message):
    damage(bundle)
    with pytest.raises(HandheldError, match=message):
        verify_bundle(bundle)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("target"), r"at \$: 'target' is a required property"),
        (
            lambda d: d["models"][1].pop("mask_threshold"),
            r"at \$\.models\[1\]: 'mask_threshold' is a required property",
        ),
        (lambda d: d["models"][0]["tokenizer"].update(eos_ids=[]), r"at \$\.models\[0\]\.tokenizer\.eos_ids"),
        (lambda d: d["files"].update({"../escape": "0" * 64}), r"at \$\.files"),
        (
            lambda d: d["models"][0].update(model_file="other.pte"),
            "llm-executorch: names other.pte, which the bundle does not contain",
        ),
        (lambda d: d["models"][2]["methods"].pop("project"), "'project' is a required property"),
        (
            lambda d: d["models"][2]["methods"]["decode"]["inputs"][0].update(name="tokens"),
            r"methods\.decode named \['embeds', 'input_pos'\]",
        ),
        (
            lambda d: d["models"][2]["config"]["compress"].pop("stc_chunk"),
            r"at \$\.models\[2\]\.config\.compress: 'stc_chunk' is a required",
        ),
        (lambda d: d.update(target="ios"), "the ios app cannot run sam on executorch"),
        (lambda d: d["models"][0]["inputs"][1].update(name="pos"), r"lacks inputs named \['tokens', 'input_pos'\]"),
    ],
)
def test_malformed_manifest_fails(bundle, change, message):
    edit_manifest(bundle, change)
    with pytest.raises(HandheldError, match=message):
        verify_bundle(bundle)


def test_ios_bundle_missing_a_companion_fails(tmp_path):
    arts = (fakes.make_longvu(tmp_path, "coreml", "lv_ml"), fakes.make_longvu(tmp_path))
    out = tmp_path / "ios"
    build_bundle(BundleConfig(target="ios", out=out, artifacts=arts, make_zip=False))
    verify_bundle(out)
    edit_manifest(out, lambda d: d["models"].pop(1))
    with pytest.raises(HandheldError, match="the ios app needs a longvu executorch artifact"):
        verify_bundle(out)


def test_all_problems_are_listed_at_once(bundle):
    (bundle / "llm-executorch/model.pte").write_bytes(b"x")
    (bundle / "sam-executorch/model.pte").unlink()
    with pytest.raises(HandheldError) as err:
        verify_bundle(bundle)
    assert (
        "checksum mismatch in llm-executorch/model.pte" in err.value.problem
        and "missing sam-executorch/model.pte" in err.value.problem
    )
    assert "handheld bundle" in err.value.fix


def test_hostile_or_foreign_zips_fail(tmp_path, bundle):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("android/bundle.json", "{}")
        zf.writestr("../outside.txt", "x")
    with pytest.raises(HandheldError, match="not a Handheld bundle zip"):
        verify_bundle(evil)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(HandheldError, match="neither a bundle folder nor a bundle zip"):
        verify_bundle(tmp_path / "notes.txt")


def test_cli_bundle_then_verify(tmp_path, capsys):
    art = fakes.make_llm(tmp_path)
    assert main(["bundle", "--target", "android", "--out", str(tmp_path / "b"), str(art)]) == 0
    assert main(["verify", str(tmp_path / "b.zip")]) == 0
    assert "bundle OK" in capsys.readouterr().out
    (tmp_path / "b" / "llm-executorch" / "tokenizer.json").write_text("{}")
    assert main(["verify", str(tmp_path / "b")]) == 2
    assert "checksum mismatch in llm-executorch/tokenizer.json" in capsys.readouterr().err
