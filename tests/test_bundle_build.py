"""`handheld bundle`: contract checks, target policy, layout, atomic publish."""

import json
import zipfile

import bundle_fakes as fakes
import pytest

from export.bundle import contract
from export.bundle.bundle import BundleConfig, build_bundle
from export.manifest import rewrite_manifest as resign_manifest
from export.manifest import write_manifest
from runtime.errors import HandheldError
from runtime.manifest import load_manifest


def test_android_bundle_holds_every_artifact_verbatim(tmp_path):
    arts = [fakes.make_llm(tmp_path), fakes.make_sam(tmp_path), fakes.make_longvu(tmp_path)]
    out = tmp_path / "bundles" / "android"
    bundle = build_bundle(BundleConfig(target="android", out=out, artifacts=arts))

    on_disk = json.loads((out / contract.BUNDLE_MANIFEST).read_text())
    assert on_disk == bundle
    assert [e["dir"] for e in bundle["models"]] == ["llm-executorch", "sam-executorch", "longvu-executorch"]
    llm = bundle["models"][0]
    source = load_manifest(arts[0])
    for key in contract.LLM_KEYS:  # keys reach the app exactly as the exporter wrote them
        assert llm[key] == source[key]
    assert (out / "llm-executorch" / llm["model_file"]).read_bytes() == (arts[0] / "model.pte").read_bytes()
    assert set(bundle["files"]) == {
        f"{e['dir']}/{rel}" for e, a in zip(bundle["models"], arts) for rel in load_manifest(a)["files"]
    }
    with zipfile.ZipFile(out.with_name("android.zip")) as zf:
        assert sorted(zf.namelist()) == sorted(f"android/{rel}" for rel in [*bundle["files"], contract.BUNDLE_MANIFEST])


def test_ios_bundle_takes_coreml_segmenter_and_both_longvu_backends(tmp_path):
    arts = [
        fakes.make_llm(tmp_path),
        fakes.make_sam(tmp_path, "coreml"),
        fakes.make_longvu(tmp_path, "coreml", "lv_ml"),
        fakes.make_longvu(tmp_path),
    ]
    bundle = build_bundle(BundleConfig(target="ios", out=tmp_path / "ios", artifacts=arts, make_zip=False))
    assert [e["dir"] for e in bundle["models"]] == [
        "llm-executorch",
        "sam-coreml",
        "longvu-coreml",
        "longvu-executorch",
    ]
    assert "sam-coreml/model.mlpackage/Data/model.mlmodel" in bundle["files"]
    assert "longvu-coreml/mlpackages/siglip.mlpackage/weights.bin" in bundle["files"]
    assert not (tmp_path / "ios.zip").exists()


def test_ios_coreml_longvu_needs_its_executorch_text_methods(tmp_path):
    art = fakes.make_longvu(tmp_path, "coreml")
    with pytest.raises(
        HandheldError, match="the ios app needs a longvu executorch artifact beside the longvu coreml one"
    ):
        build_bundle(BundleConfig(target="ios", out=tmp_path / "b", artifacts=(art,)))


def test_files_no_app_reads_stay_out(tmp_path):
    art = fakes.make_sam(tmp_path)
    manifest = load_manifest(art)
    (art / "teacher_encoder_fp32.pte").write_bytes(b"T" * 1000)  # a bench baseline, not for phones
    fields = {
        k: v for k, v in manifest.items() if k not in ("format_version", "kind", "created_unix", "toolchain", "files")
    }
    write_manifest(art, "sam", **fields)
    bundle = build_bundle(BundleConfig(target="android", out=tmp_path / "b", artifacts=(art,)))
    assert sorted(bundle["files"]) == ["sam-executorch/model.pte"]
    assert bundle["models"][0]["omitted_files"] == ["teacher_encoder_fp32.pte"]
    assert bundle["models"][0]["size_bytes"] == (art / "model.pte").stat().st_size


def test_a_named_file_the_artifact_lacks_is_refused(tmp_path):
    art = fakes.make_llm(tmp_path)
    manifest = load_manifest(art)
    manifest["model_file"] = "model_int8.pte"
    resign_manifest(art, manifest)  # as an exporter that wrote it this way would
    with pytest.raises(HandheldError, match=r"names model_int8\.pte without a checksum"):
        build_bundle(BundleConfig(target="android", out=tmp_path / "b", artifacts=(art,)))


@pytest.mark.parametrize(
    "target, make, backend",
    [("ios", fakes.make_sam, "executorch"), ("android", fakes.make_sam, "coreml"), ("android", fakes.make_llm, "onnx")],
)
def test_target_refuses_backends_its_app_cannot_run(tmp_path, target, make, backend):
    art = make(tmp_path, backend)
    with pytest.raises(HandheldError, match=f"the {target} app runs .* this artifact is {backend}"):
        build_bundle(BundleConfig(target=target, out=tmp_path / "b", artifacts=(art,)))
    assert not (tmp_path / "b").exists()


def test_missing_contract_key_names_it_and_publishes_nothing(tmp_path):
    art = fakes.make_sam(tmp_path)
    manifest = load_manifest(art)
    clicks = {k: v for k, v in manifest["clicks"].items() if k != "sigma_px"}
    fields = {
        k: v
        for k, v in manifest.items()
        if k not in ("format_version", "kind", "created_unix", "toolchain", "files", "clicks")
    }
    write_manifest(art, "sam", clicks=clicks, **fields)
    llm = fakes.make_llm(tmp_path)
    with pytest.raises(HandheldError, match=r"lacks what the phone apps read: clicks\.sigma_px"):
        build_bundle(BundleConfig(target="android", out=tmp_path / "b", artifacts=(llm, art)))
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.partial-*"))


def test_renamed_io_is_refused(tmp_path):
    art = fakes.make_llm(tmp_path)
    manifest = load_manifest(art)
    manifest["inputs"][0]["name"] = "input_ids"
    resign_manifest(art, manifest)  # as an exporter that wrote it this way would
    with pytest.raises(
        HandheldError, match=r"inputs named \['tokens', 'input_pos'\] \(found \['input_ids', 'input_pos'\]\)"
    ):
        build_bundle(BundleConfig(target="android", out=tmp_path / "b", artifacts=(art,)))


def test_tampered_artifact_is_refused_before_copying(tmp_path):
    art = fakes.make_llm(tmp_path)
    (art / "model.pte").write_bytes(b"evil")
    with pytest.raises(HandheldError, match="checksum mismatch in model.pte"):
        build_bundle(BundleConfig(target="android", out=tmp_path / "b", artifacts=(art,)))


def test_duplicate_kind_and_backend_and_empty_list(tmp_path):
    a, b = fakes.make_llm(tmp_path, name="a"), fakes.make_llm(tmp_path, name="b")
    with pytest.raises(HandheldError, match="two llm-executorch artifacts"):
        build_bundle(BundleConfig(target="android", out=tmp_path / "x", artifacts=(a, b)))
    with pytest.raises(HandheldError, match="no artifacts"):
        BundleConfig(target="android", out=tmp_path / "x", artifacts=())
    with pytest.raises(HandheldError, match="unknown bundle target 'windows'"):
        BundleConfig(target="windows", out=tmp_path / "x", artifacts=(a,))


def test_rebuild_replaces_the_old_bundle_whole(tmp_path):
    out = tmp_path / "b"
    build_bundle(BundleConfig(target="android", out=out, artifacts=(fakes.make_llm(tmp_path),)))
    build_bundle(BundleConfig(target="android", out=out, artifacts=(fakes.make_sam(tmp_path),)))
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "sam-executorch"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_schema_requires_exactly_the_contract_keys():
    from export.bundle.verify import load_schema

    schema = load_schema("bundle")

    def resolve(node):  # follow a local "$ref"
        return schema["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    by_kind = {b["if"]["properties"]["kind"]["const"]: b["then"] for b in schema["$defs"]["entry"]["allOf"]}
    assert set(by_kind) == set(contract.KINDS)
    for kind, then in by_kind.items():
        assert tuple(then["required"]) == contract.KIND_KEYS[kind]
    for (kind, path), keys in contract.NESTED_KEYS.items():
        node = by_kind[kind]
        for part in path.split("."):
            node = resolve(node["properties"][part])
        assert tuple(node["required"]) == keys, (kind, path)
    assert tuple(schema["$defs"]["method"]["required"]) == contract.METHOD_KEYS
    assert tuple(by_kind["longvu"]["properties"]["methods"]["required"]) == contract.LONGVU_METHODS
