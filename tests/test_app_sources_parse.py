"""The demo apps cannot be compiled here (no Android SDK, no Xcode); at least every Kotlin, Gradle
and Swift file must parse. tree-sitter's grammars find unbalanced braces, broken declarations
and missing expressions, not type errors."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p for d in ("android_demo", "ios_demo") for p in (ROOT / d).rglob("*") if p.suffix in (".kt", ".kts", ".swift")
)


def parser_for(suffix: str):
    from tree_sitter import Language, Parser

    if suffix == ".swift":
        import tree_sitter_swift as grammar
    else:
        import tree_sitter_kotlin as grammar
    return Parser(Language(grammar.language()))


def syntax_errors(path: Path) -> list[str]:
    tree = parser_for(path.suffix).parse(path.read_bytes())
    lines, found, stack = path.read_text().splitlines(), [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            found.append(f"line {node.start_point[0] + 1}: {lines[node.start_point[0]].strip()[:120]}")
        stack.extend(node.children)
    return found


def test_every_app_source_is_found():
    assert (
        len([p for p in SOURCES if p.suffix == ".kt"]) >= 10 and len([p for p in SOURCES if p.suffix == ".swift"]) >= 10
    )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_app_source_parses(path):
    assert syntax_errors(path) == []


def test_the_check_catches_a_broken_file(tmp_path):
    broken = tmp_path / "Broken.kt"
    broken.write_text("fun f( {\n    val x =\n}\n")
    assert syntax_errors(broken)
