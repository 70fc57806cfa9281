"""The README's quick start and CI agree."""

import re
from pathlib import Path

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
