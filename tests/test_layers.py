"""The package layering the README's architecture table states: runtime/ (the contract the phone
apps implement) imports nothing from export/, so it can ship and be read on its own."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK_EXPORT = """
import importlib, importlib.abc, pkgutil, sys
import runtime

class NoExport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "export" or name.startswith("export."):
            raise ImportError(f"runtime imported {name}")
        return None

sys.meta_path.insert(0, NoExport())
names = [m.name for m in pkgutil.iter_modules(runtime.__path__, "runtime.")]
for name in names:
    importlib.import_module(name)
assert not [m for m in sys.modules if m == "export" or m.startswith("export.")]
print(len(names))
"""


def test_runtime_imports_without_export():
    out = subprocess.run([sys.executable, "-c", BLOCK_EXPORT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) >= 15  # every runtime module was imported


def test_no_runtime_source_names_export():
    """Lazy imports inside functions count too: no runtime source line imports export."""
    offenders = [
        f"{p.name}:{i}"
        for p in sorted((ROOT / "runtime").glob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if line.strip().startswith(("from export", "import export"))
    ]
    assert not offenders, offenders


FAMILIES = ("export.llm", "export.sam", "export.longvu")


def test_backends_import_no_model_family():
    """export/backends/ lowers any module: no line of it (lazy imports included) imports a
    model family; the families import the backends, never the reverse."""
    offenders = [
        f"{p.name}:{i}: {line.strip()}"
        for p in sorted((ROOT / "export" / "backends").glob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if line.strip().startswith(tuple(f"{kw} {fam}" for kw in ("from", "import") for fam in FAMILIES))
    ]
    assert not offenders, offenders
    assert len(list((ROOT / "export" / "backends").glob("*.py"))) >= 4  # the scan saw the backends


def test_one_recipe_registry_per_family_keyed_by_backend():
    """Each family names what it does on each backend in one registry: every Backend there,
    looked up by the enum or by the manifest's name, an unknown name an error listing them."""
    import pytest

    from export.config import Backend
    from export.llm.recipes import LLM_RECIPES
    from export.longvu.export import LONGVU_BACKENDS
    from export.sam.export import SAM_RECIPES
    from runtime.errors import HandheldError

    for registry in (LLM_RECIPES, SAM_RECIPES, LONGVU_BACKENDS):
        assert registry.names() == sorted(b.value for b in Backend)
        assert registry.get(Backend.ONNX) is registry.get("onnx")
        with pytest.raises(HandheldError) as err:
            registry.get("tflite")
        assert err.value.fix == "use one of: coreml, executorch, onnx"
    for backend in Backend:  # every step of every LLM recipe resolves to a function
        recipe = LLM_RECIPES.get(backend)
        assert all(callable(recipe.step(name)) for name in ("lower", "simulate", "parity"))
