"""Measurements in fresh processes: the parent's runner and the child's entry point.

Rule: one measurement, one process. Each store open (and each memory
measurement) runs in `python -m meerkat_actor._bench child SPEC`, so its
time and peak resident memory are its own, not the leftovers of the parent
that built the store. SPEC is a JSON object whose `kind` names the
measurement; the child prints one JSON line, its result or
`{"failure": ...}` when the store gave a wrong answer.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import trio

import meerkat_actor

from ._measure import BenchFailure

__all__ = ["Measurement", "child_main", "run_child"]

#: What a child runs: its spec in, its JSON result out.
Measurement = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

#: Where this `meerkat_actor` is imported from: the child must import the same.
_PACKAGE_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(meerkat_actor.__file__)))


async def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; return its JSON result.

    Raises:
        BenchFailure: the child failed, or reported a wrong answer.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "meerkat_actor._bench", "child", json.dumps(spec)]
    done = await trio.run_process(
        command, capture_stdout=True, capture_stderr=True, check=False, env=env
    )
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-8:]
        raise BenchFailure(
            f"the {spec['kind']} child for {spec.get('path', spec.get('peer'))} failed"
            f" (exit {done.returncode}): " + " | ".join(tail)
        )
    result: dict[str, Any] = json.loads(lines[-1])
    if "failure" in result:
        raise BenchFailure(result["failure"])
    return result


def child_main(argv: Sequence[str], measurements: Mapping[str, Measurement]) -> int:
    """`python -m meerkat_actor._bench child SPEC`: run the measurement SPEC's
    `kind` names and print its result as one JSON line (or `{"failure": ...}`)."""
    if len(argv) != 2 or argv[0] != "child":
        print("usage: python -m meerkat_actor._bench child SPEC", file=sys.stderr)
        return 2
    spec: dict[str, Any] = json.loads(argv[1])
    measure = measurements.get(spec.get("kind", ""))
    if measure is None:
        print(f"unknown measurement {spec.get('kind')!r}", file=sys.stderr)
        return 2
    try:
        result = trio.run(measure, spec)
    except BenchFailure as failure:
        result = {"failure": f"{spec['kind']} of {spec.get('path', spec.get('peer'))}: {failure}"}
    print(json.dumps(result), flush=True)
    return 0
