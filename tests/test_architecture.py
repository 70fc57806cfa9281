"""The module map of docs/architecture.md is true: every module of the
package imports only what its row allows, and the import graph has no cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import meerkat_actor as ma

PACKAGE = Path(ma.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"


def _type_checking_blocks(tree: ast.Module) -> set[ast.AST]:
    """The nodes inside `if TYPE_CHECKING:` blocks (imports for annotations only)."""
    inside: set[ast.AST] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            for statement in node.body:
                inside.update(ast.walk(statement))
    return inside


def _imports(path: Path, *, runtime_only: bool = False) -> set[str]:
    """The package modules `path` imports (relative imports, first component);
    with `runtime_only`, not those imported for annotations only."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_blocks(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def _graph(*, runtime_only: bool = False) -> dict[str, set[str]]:
    return {
        path.stem: _imports(path, runtime_only=runtime_only)
        for path in sorted(PACKAGE.glob("*.py"))
    }


def _allowed() -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`") or not cells[0].endswith(".py`"):
            continue
        module = cells[0].strip("`").removesuffix(".py")
        table[module] = set(re.findall(r"`(\w+)`", cells[3]))
    return table


def test_every_module_has_a_row():
    assert set(_allowed()) == set(_graph())


def test_every_module_imports_only_what_its_row_allows():
    allowed = _allowed()
    for module, imports in _graph().items():
        extra = imports - allowed[module]
        assert not extra, f"{module}.py imports {sorted(extra)}, not in docs/architecture.md"


def test_the_import_graph_has_no_cycle():
    # An import for annotations only (`if TYPE_CHECKING:`) runs never: it
    # cannot make a cycle at import time.
    graph = _graph(runtime_only=True)
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done or module not in graph:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_table_lists_no_import_a_module_does_not_make():
    """A row that allows more than the module uses has drifted too."""
    graph = _graph()
    for module, allowed in _allowed().items():
        assert allowed <= graph[module], (
            f"{module}: the doc allows {sorted(allowed - graph[module])}"
        )
