"""The documentation site (docs/, mkdocs.yml) stays whole and true.

- docs/api.md names every public name, every `RuntimeStore` method and the
  `ActorStore` extras;
- every relative link in docs/*.md and README.md points to a file that exists,
  and so does every file a test module's docstrings and comments name;
- mkdocs.yml's `nav` lists exactly the pages in docs/;
- every ```python block of docs/quickstart.md runs as written, each in a
  fresh namespace, in an empty working directory.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import unittest
from pathlib import Path

import pytest
import trio

import meerkat_actor as ma
import meerkat_actor.testing as kit
from meerkat_actor._protocol import RuntimeStore

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))

# --- api.md covers the public surface -------------------------------------------------------

_HEADING = re.compile(r"^#{1,6} (.*)$", re.M)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _api_names() -> set[str]:
    """Identifiers that appear in a heading or a code span of api.md."""
    text = (DOCS / "api.md").read_text()
    spans = _HEADING.findall(text) + _CODE_SPAN.findall(text)
    return {name for span in spans for name in _IDENTIFIER.findall(span)}


def _protocol_methods() -> list[str]:
    return sorted(
        name for name, value in vars(RuntimeStore).items() if callable(value) and name[0] != "_"
    )


def test_the_protocol_has_the_methods_of_the_contract():
    # A guard for the next test: it must not pass by finding no method.
    assert len(_protocol_methods()) == 21  # SPEC §3 (15) and §3b (6)


@pytest.mark.parametrize(
    "name",
    sorted(ma.__all__)
    + [f"testing.{name}" for name in sorted(kit.__all__)]
    + [f"strategies.{name}" for name in sorted(kit.strategies.__all__)]
    + [f"RuntimeStore.{name}" for name in _protocol_methods()]
    + ["ActorStore.checkpoint", "ActorStore.statistics", "ActorStore.backup"],
)
def test_api_reference_names_it(name):
    assert name.rpartition(".")[2] in _api_names(), f"docs/api.md does not document {name}"


# --- links -------------------------------------------------------------------------------------

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def _without_code(text: str) -> str:
    """Markdown without fenced code blocks and code spans (no links there)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return _CODE_SPAN.sub("", text)


def _relative_links(path: Path) -> list[str]:
    targets = _LINK.findall(_without_code(path.read_text()))
    return [t for t in targets if not _SCHEME.match(t) and not t.startswith("#")]


def test_the_link_pattern_finds_links():
    assert "quickstart.md" in _relative_links(DOCS / "index.md")


@pytest.mark.parametrize("page", [*PAGES, ROOT / "README.md"], ids=lambda p: p.name)
def test_relative_links_point_to_existing_files(page):
    missing = []
    for target in _relative_links(page):
        file_part = target.split("#", 1)[0]
        if not (page.parent / file_part).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


_FILE_NAME = re.compile(r"[\w./-]*\w\.(?:md|py|toml|json)\b")
TEST_MODULES = sorted([*(ROOT / "tests").glob("*.py"), *(ROOT / "stateful_tests").glob("*.py")])
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _prose(module: Path) -> str:
    """A module's docstrings and comments: where it names what it follows."""
    source = module.read_text()
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, _DOCUMENTED)]
    docstrings = [ast.get_docstring(n) or "" for n in nodes]
    comments = [
        t.string
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type == tokenize.COMMENT
    ]
    return "\n".join(docstrings + comments)


@pytest.mark.parametrize("module", TEST_MODULES, ids=lambda p: p.name)
def test_the_files_a_test_module_names_exist(module):
    """A file a test module's docstrings or comments name (a spec it follows,
    a helper it uses) is in the repository: under the root, beside the
    module, in docs/ or in the package."""
    bases = (ROOT, module.parent, DOCS, ROOT / "meerkat_actor")
    missing = [
        name
        for name in sorted(set(_FILE_NAME.findall(_prose(module))))
        if not any((base / name).exists() for base in bases)
    ]
    assert not missing, f"{module.relative_to(ROOT)} names missing files: {missing}"


# --- mkdocs.yml --------------------------------------------------------------------------------


def _nav_pages() -> list[str]:
    """The pages listed under `nav:` (read without a YAML parser: mkdocs is
    not a dependency)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = re.search(r"^nav:\n((?:[ \t]+.*\n?|\n)*)", text, re.M)
    assert nav is not None, "mkdocs.yml has no nav"
    return re.findall(r"([\w./-]+\.md)\s*$", nav.group(1), re.M)


def test_mkdocs_nav_lists_every_page_once():
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), f"a page is listed twice: {nav}"
    assert set(nav) == {page.name for page in PAGES}


def test_mkdocs_uses_a_builtin_theme_and_the_docs_directory():
    text = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^theme:\s*\n\s+name:\s*(readthedocs|mkdocs)\s*$", text, re.M)
    assert re.search(r"^docs_dir:\s*docs\s*$", text, re.M)


# --- the quick start runs ----------------------------------------------------------------------


def _quickstart_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (DOCS / "quickstart.md").read_text(), re.S | re.M)


def test_the_quickstart_has_its_programs():
    blocks = _quickstart_blocks()
    assert len(blocks) == 5
    assert any("open_store(" in b and "atomic_apply" in b for b in blocks)
    assert any("purge_runtime" in b and "list_runtimes" in b for b in blocks)
    assert any("open_sqlite_store(" in b for b in blocks)
    assert any("RuntimeStoreMachine" in b for b in blocks)


@pytest.mark.parametrize("index", range(len(_quickstart_blocks())))
def test_quickstart_block_runs(index, tmp_path, monkeypatch):
    block = _quickstart_blocks()[index]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"quickstart_{index}"}
    exec(compile(block, f"docs/quickstart.md (python block {index + 1})", "exec"), namespace)
    if "RuntimeStoreMachine" in block:
        cases = [v for v in namespace.values() if isinstance(v, type)]
        assert any(issubclass(v, unittest.TestCase) for v in cases), "no TestCase for pytest"


# --- docs/asyncio.md's program runs --------------------------------------------------------------


def test_the_asyncio_page_program_runs_and_its_store_opens_from_trio(tmp_path, monkeypatch):
    """The first program of docs/asyncio.md, as written (asyncio.run around
    meerkat_actor.asyncio.open_store), writes a durable store that the trio
    store then opens, holding what the program wrote."""
    blocks = re.findall(r"^```python\n(.*?)^```", (DOCS / "asyncio.md").read_text(), re.S | re.M)
    program = blocks[0]
    assert "asyncio.run(main())" in program
    assert "ma_asyncio.open_store(" in program
    monkeypatch.chdir(tmp_path)
    exec(compile(program, "docs/asyncio.md (python block 1)", "exec"), {"__name__": "asyncio_doc"})

    async def reopened() -> int:
        async with ma.open_store(tmp_path / "agent-state") as store:
            runtime = ma.LogicalRuntimeId("agent-1")
            assert await store.list_runtimes() == [runtime]
            return len(await store.load_boundary_receipts(runtime))

    assert trio.run(reopened) == 1
