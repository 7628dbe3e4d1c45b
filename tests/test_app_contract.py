"""The phone apps read only what Handheld produces.

Parses the Kotlin (android_demo/) and Swift (ios_demo/) sources for the bundle.json keys, file
names, tensor names, launch arguments and benchmark-record keys they use, then checks each one
against what the bundler writes for artifacts carrying exactly the contract keys, against the
real exporters' code and constants, and against the bench schema. Renaming a key on either side
fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import bundle_fakes as fakes
import pytest

from export.bundle import contract
from export.bundle.bundle import BundleConfig, build_bundle
from export.bundle.verify import load_schema

ROOT = Path(__file__).resolve().parents[1]
KOTLIN = ROOT / "android_demo" / "app" / "src" / "main" / "java" / "org" / "handheld" / "demo"
SWIFT = ROOT / "ios_demo" / "HandheldDemo"
# files that parse other JSON formats with their own keys
KOTLIN_EXEMPT = {"BpeTokenizer.kt": "Hugging Face tokenizer.json", "LlmChat.kt": "ExecuTorch's runner stats JSON"}
SWIFT_EXEMPT = {"BPETokenizer.swift": "Hugging Face tokenizer.json"}
JSON_READ = re.compile(
    r"\.(?:get|opt)(?:String|JSONObject|JSONArray|Int|Long|Double|Boolean)\(\s*([A-Za-z_][\w.]*|\"[^\"]*\")\s*[,)]|\.(?:has|isNull)\(\s*([A-Za-z_][\w.]*|\"[^\"]*\")\s*\)"
)


# --- parsing the app sources ------------------------------------------------------------
def kotlin_object(name: str) -> dict[str, str]:
    """`object NAME { const val X = "x" ... }` constants from any .kt file."""
    for path in KOTLIN.glob("*.kt"):
        m = re.search(rf"object {name} \{{(.*?)\n\s*\}}", path.read_text(), re.S)
        if m:
            return dict(re.findall(r'const val (\w+) = "([^"]*)"', m.group(1)))
    raise AssertionError(f"no Kotlin object {name}")


def kotlin_list(name: str) -> tuple[str, ...]:
    text = (KOTLIN / "BundleContract.kt").read_text()
    m = re.search(rf"val {name} = listOf\(([^)]*)\)", text)
    return tuple(re.findall(r'"([^"]*)"', m.group(1)))


def kotlin_reads() -> tuple[set[str], list[str]]:
    """(manifest keys read through Keys.X, literal-string reads outside the exempt files)."""
    keys, literals = kotlin_object("Keys"), []
    read = set()
    for path in KOTLIN.glob("*.kt"):
        for m in JSON_READ.finditer(path.read_text()):
            arg = m.group(1) or m.group(2)
            if arg.startswith("Keys."):
                read.add(keys[arg.removeprefix("Keys.")])
            elif arg.startswith('"') and path.name not in KOTLIN_EXEMPT:
                literals.append(f"{path.name}: {arg}")
    return read, literals


def swift_structs() -> dict[str, tuple[str, set[str]]]:
    """struct name -> (conformances, CodingKeys raw values) for every struct with CodingKeys."""
    out = {}
    for path in SWIFT.glob("*.swift"):
        if path.name in SWIFT_EXEMPT:
            continue
        text = path.read_text()
        for m in re.finditer(r"struct (\w+): ([\w, ]+) \{", text):
            body = text[m.end() : text.find("\nstruct ", m.end()) if "\nstruct " in text[m.end() :] else len(text)]
            keys = re.search(r"enum CodingKeys: String, CodingKey \{(.*?)\}", body, re.S)
            if not keys:
                continue
            values = set()
            for case in re.findall(r"case ([^\n]+)", keys.group(1)):
                for item in case.split(","):
                    name, _, raw = item.partition("=")
                    values.add(raw.strip().strip('"') if raw else name.strip())
            out[m.group(1)] = (m.group(2), values)
    return out


def swift_reads() -> set[str]:
    return {k for conf, keys in swift_structs().values() if "Decodable" in conf or "Codable" in conf for k in keys}


def swift_writes() -> set[str]:
    return {k for conf, keys in swift_structs().values() if conf.strip() == "Encodable" for k in keys}


def swift_names(name: str):
    text = (SWIFT / "BundleManifest.swift").read_text()
    m = re.search(rf"static let {name} = (\[[^\]]*\]|\"[^\"]*\")", text)
    value = m.group(1)
    return value.strip('"') if value.startswith('"') else tuple(re.findall(r'"([^"]*)"', value))


def swift_longvu_io() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    text = (SWIFT / "BundleManifest.swift").read_text()
    pairs = re.findall(r'"(\w+)": \(\[([^\]]*)\], \[([^\]]*)\]\)', text)
    return {m: (tuple(re.findall(r'"(\w+)"', i)), tuple(re.findall(r'"(\w+)"', o))) for m, i, o in pairs}


def kotlin_longvu_io() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    text = (KOTLIN / "BundleContract.kt").read_text()
    consts = dict(re.findall(r'const val (\w+) = "([^"]*)"', text))
    pairs = re.findall(r"(\w+) to \(listOf\(([^)]*)\) to listOf\(([^)]*)\)\)", text)
    return {consts[m]: (tuple(re.findall(r'"(\w+)"', i)), tuple(re.findall(r'"(\w+)"', o))) for m, i, o in pairs}


# --- what Handheld produces --------------------------------------------------------------
def all_keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in all_keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in all_keys(v)}
    return set()


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    """Keys at any depth of bundle.json for both targets, from artifacts with exactly the contract keys."""
    tmp = tmp_path_factory.mktemp("contract")
    android = [fakes.make_llm(tmp / "a"), fakes.make_sam(tmp / "a"), fakes.make_longvu(tmp / "a")]
    ios = [
        fakes.make_llm(tmp / "i"),
        fakes.make_sam(tmp / "i", "coreml"),
        fakes.make_longvu(tmp / "i"),
        fakes.make_longvu(tmp / "i", "coreml", "lv"),
    ]
    return {
        "android": all_keys(
            build_bundle(BundleConfig(target="android", out=tmp / "android", artifacts=android, make_zip=False))
        ),
        "ios": all_keys(build_bundle(BundleConfig(target="ios", out=tmp / "ios", artifacts=ios, make_zip=False))),
    }


def exporter_strings(path: Path, kind: str) -> tuple[set[str], set[str]]:
    """(keyword names of write_manifest(..., kind, ...), string keys/values of dict literals) in a module."""
    tree = ast.parse(path.read_text())
    kwargs, strings = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "write_manifest":
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value == kind:
                kwargs |= {k.arg for k in node.keywords if k.arg}
        if isinstance(node, ast.Dict):
            for part in (*node.keys, *node.values):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    strings.add(part.value)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.add(node.value)
    assert kwargs, f"{path} no longer calls write_manifest(folder, {kind!r}, ...)"
    return kwargs, strings


# --- the apps read only what is produced ---------------------------------------------------
def test_android_reads_only_keys_the_bundler_writes(produced):
    read, literals = kotlin_reads()
    assert not literals, f"read manifest keys through Keys.*, not string literals: {literals}"
    assert len(read) > 40  # the parser still sees the app's reads
    assert read <= produced["android"], (
        f"the Android app reads keys no bundle has: {sorted(read - produced['android'])}"
    )
    unused = set(kotlin_object("Keys").values()) - read
    assert not unused, f"Keys constants the app never reads (stale contract?): {sorted(unused)}"


def test_ios_reads_only_keys_the_bundler_writes(produced):
    read = swift_reads()
    assert len(read) > 40
    assert read <= produced["ios"], f"the iOS app reads keys no bundle has: {sorted(read - produced['ios'])}"


def test_apps_read_every_contract_key():
    """Both apps consume what the contract makes exporters write (no dead contract keys)."""
    wanted = {p.rsplit(".", 1)[-1] for kind in contract.KINDS for p in contract.required_paths(kind)}
    wanted |= set(contract.IO_KEYS) - {"dtype"} | set(contract.METHOD_KEYS)
    kotlin, _ = kotlin_reads()
    assert wanted <= kotlin, sorted(wanted - kotlin)
    assert wanted <= swift_reads(), sorted(wanted - swift_reads())


# --- names: apps == contract == the exporters' own constants -----------------------------
def test_file_and_tensor_names_match_the_exporters():
    from export.llm.wrapper import INPUT_NAMES, OUTPUT_NAMES

    assert contract.LLM_INPUT_NAMES == tuple(INPUT_NAMES) and contract.LLM_OUTPUT_NAMES == tuple(OUTPUT_NAMES)
    assert kotlin_object("Names")["BUNDLE_MANIFEST"] == swift_names("manifest") == contract.BUNDLE_MANIFEST
    assert kotlin_list("LLM_INPUTS") == swift_names("llmInputs") == contract.LLM_INPUT_NAMES
    assert kotlin_list("LLM_OUTPUTS") == swift_names("llmOutputs") == contract.LLM_OUTPUT_NAMES
    assert kotlin_list("SAM_INPUTS") == swift_names("samInputs") == contract.SAM_INPUT_NAMES
    assert kotlin_list("SAM_OUTPUTS") == swift_names("samOutputs") == contract.SAM_OUTPUT_NAMES
    assert kotlin_longvu_io() == swift_longvu_io() == contract.LONGVU_IO
    assert swift_names("longVUVisionMethods") == contract.LONGVU_VISION_METHODS


def test_llm_exporter_writes_the_llm_keys():
    kwargs, strings = exporter_strings(ROOT / "export" / "llm" / "pipeline.py", "llm")
    assert set(contract.LLM_KEYS) <= kwargs | strings, sorted(set(contract.LLM_KEYS) - kwargs - strings)
    assert set(contract.TOKENIZER_KEYS) <= strings, sorted(set(contract.TOKENIZER_KEYS) - strings)


def test_longvu_exporter_writes_the_longvu_keys():
    from export.config import to_jsonable
    from export.longvu.config import PRESETS

    path = ROOT / "export" / "longvu" / "export.py"
    kwargs, strings = exporter_strings(path, "longvu")
    assert set(contract.LONGVU_KEYS) <= kwargs | strings, sorted(set(contract.LONGVU_KEYS) - kwargs - strings)
    names = {n for ins, outs in contract.LONGVU_IO.values() for n in (*ins, *outs)}
    assert set(contract.LONGVU_METHODS) | names <= strings, sorted((set(contract.LONGVU_METHODS) | names) - strings)
    # `config` is LongVUConfig.to_dict(): walk every contract path on a real preset
    config = {"config": to_jsonable(PRESETS["longvu-tiny"])}
    for (kind, parent), keys in contract.NESTED_KEYS.items():
        if kind == "longvu" and parent.startswith("config"):
            node = config
            for part in parent.split("."):
                node = node[part]
            assert set(keys) <= set(node), (parent, sorted(set(keys) - set(node)))


def test_sam_exporter_writes_the_sam_keys():
    path = ROOT / "export" / "sam" / "export.py"
    if not path.exists():
        pytest.skip("export/sam/export.py has not landed")
    from export.sam.config import SAM_PRESETS
    from export.sam.wrappers import SQUEEZESAM_IO

    assert tuple(SQUEEZESAM_IO[0]) == contract.SAM_INPUT_NAMES and tuple(SQUEEZESAM_IO[1]) == contract.SAM_OUTPUT_NAMES
    kwargs, strings = exporter_strings(path, "sam")
    assert set(contract.SAM_KEYS) <= kwargs | strings, sorted(set(contract.SAM_KEYS) - kwargs - strings)
    from export.sam.export import manifest_fields

    fields = manifest_fields(SAM_PRESETS["tiny-test"])  # the real dict the exporter writes
    for (kind, parent), keys in contract.NESTED_KEYS.items():
        if kind == "sam":
            assert set(keys) <= set(fields[parent]), (parent, sorted(set(keys) - set(fields[parent])))
    assert [s["name"] for s in fields["inputs"]] == list(contract.SAM_INPUT_NAMES)


# --- device plumbing: package ids, launch arguments, stats ------------------------------
def test_app_identities_match_the_bench_drivers():
    gradle = (ROOT / "android_demo" / "app" / "build.gradle.kts").read_text()
    assert re.search(r'applicationId = "([^"]+)"', gradle).group(1) == contract.ANDROID_PACKAGE
    manifest = (ROOT / "android_demo" / "app" / "src" / "main" / "AndroidManifest.xml").read_text()
    assert f'android:name="{contract.ANDROID_BENCH_ACTIVITY}"' in manifest
    project = (ROOT / "ios_demo" / "project.yml").read_text()
    assert re.search(r"PRODUCT_BUNDLE_IDENTIFIER: (\S+)", project).group(1) == contract.IOS_BUNDLE_ID
    assert kotlin_object("Names")["BUNDLE_DIR"] == contract.ANDROID_BUNDLE_DIR.rsplit("/", 1)[1]
    assert f'"Documents/{swift_names("folder")}"' in (SWIFT / "BenchmarkMode.swift").read_text()
    assert f"Documents/{swift_names('folder')}" == contract.IOS_BUNDLE_DIR


def test_launch_arguments_match_what_the_apps_parse():
    from export.device import DeviceBenchConfig, DeviceSpec
    from export.device.adb import app_command
    from export.device.ios import launch_arguments

    cfg = DeviceBenchConfig(DeviceSpec("adb", "x"), threads=(1,), iterations=2)
    sent = set(re.findall(r"--e[si] (\w+)", app_command("sam-executorch", cfg, "/out.json")))
    assert sent == set(kotlin_object("Extras").values())
    ios_sent = {a for a in launch_arguments("sam-coreml", cfg, "Documents/bench.json") if a.startswith("--")}
    parsed = set(re.findall(r'flags\["(--\w+)"\]', (SWIFT / "BenchmarkMode.swift").read_text())) | {"--benchmark"}
    assert ios_sent == parsed


def test_llm_stats_keys_match_the_host_parser():
    """The chat screen derives phone metrics from ExecuTorch's stats JSON exactly as results.py does."""
    app = set(re.findall(r'stats\.get(?:Double|Int)\("(\w+)"\)', (KOTLIN / "LlmChat.kt").read_text()))
    host = set(re.findall(r's\["(\w+)"\]', (ROOT / "export" / "device" / "results.py").read_text()))
    assert app == host and "prompt_eval_end_ms" in app


# --- benchmark records the apps write ------------------------------------------------------
def schema_keys() -> tuple[set[str], set[str]]:
    schema = load_schema("bench")
    props = schema["properties"]
    allowed = set(props) | set(props["device"]["properties"]) | set(props["metrics"]["items"]["properties"])
    required = set(schema["required"]) | set(props["device"]["required"]) | set(props["metrics"]["items"]["required"])
    return allowed, required


@pytest.mark.parametrize("app", ["android", "ios"])
def test_benchmark_records_follow_the_schema(app):
    if app == "android":
        keys = kotlin_object("BenchKeys")
        text = (KOTLIN / "BenchmarkRecord.kt").read_text()
        written = {keys[k] for k in re.findall(r"\.put\(BenchKeys\.(\w+)", text)}
    else:
        written = swift_writes()
    allowed, required = schema_keys()
    assert written <= allowed, f"{app} writes keys bench.schema.json does not define: {sorted(written - allowed)}"
    assert required <= written, f"{app} omits required bench keys: {sorted(required - written)}"
