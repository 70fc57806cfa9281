"""The README's quick start and CI agree."""

import re
import unittest
from pathlib import Path

from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from meerkat_actor.testing import Capabilities

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", readme, re.S)
    assert block is not None, "README has no Quick start shell block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_quick_start_is_two_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert "meerkat_actor demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _quick_start_commands()[1] in ci_lines


def test_the_readme_usage_example_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Use.*?```python\n(.*?)```", readme, re.S)
    assert block is not None, "README has no Use python block"
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(block.group(1), "README.md", "exec"), namespace)


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_the_readme_kit_example_defines_a_collectable_machine():
    readme = ROOT / "README.md"
    block = next(b for b in _python_blocks(readme) if "RuntimeStoreMachine" in b)
    namespace: dict[str, object] = {"__name__": "readme_kit", "open_my_store": object()}
    exec(compile(block, "README.md", "exec"), namespace)
    machine = namespace["MyStoreMachine"]
    assert machine.capabilities == Capabilities(  # type: ignore[attr-defined]
        durable=True, crash_safe=True, ops_lifecycle=False
    )
    assert issubclass(namespace["TestMyStore"], unittest.TestCase)  # type: ignore[arg-type]


def test_the_conformance_worked_example_runs():
    """docs/conformance.md: the worked example, the settings line and the
    in-memory example run as written, and the machines they define pass."""
    blocks = _python_blocks(ROOT / "docs" / "conformance.md")[:3]
    assert "open_sqlite_store" in blocks[0]
    assert "TestSqliteStore.settings" in blocks[1]
    assert "open_store = staticmethod(ma.open_store)" in blocks[2]
    namespace: dict[str, object] = {"__name__": "conformance_example"}
    for block in blocks:
        exec(compile(block, "docs/conformance.md", "exec"), namespace)
    assert namespace["TestSqliteStore"].settings.max_examples == 500  # type: ignore[attr-defined]
    quick = settings(max_examples=3, stateful_step_count=8, database=None, deadline=None)
    for name in ("SqliteStoreMachine", "InMemoryStoreMachine"):
        run_state_machine_as_test(namespace[name], settings=quick)  # type: ignore[arg-type]


def test_ci_runs_the_slow_tests_and_the_readme_names_the_fast_set():
    """`-m 'not slow'` is the fast set; the command CI runs selects no marker."""
    pytest_arguments = _quick_start_commands()[1].split(" -m pytest", 1)[1].split()
    assert "-m" not in pytest_arguments
    assert "-m 'not slow'" in (ROOT / "README.md").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"slow: ' in pyproject
