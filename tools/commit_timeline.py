"""Where one durable commit's time goes, at one task (issue 12, target 5).

    python tools/commit_timeline.py [COMMITS] [SESSION_BYTES]

Commits bench-shaped writes (4 KiB sessions unless told) one at a time on a durable
store and stamps each: the call, the writer task waking, the worker thread
starting and ending its append (frame, write, fdatasync), the writer
resuming after it, the writer answering, the caller resuming. Prints the
p50 and mean of each span. The writer's methods are wrapped for the
stamps, so the total is a little above `tools/commit_loop.py`'s.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import trio

import meerkat_actor as ma
from meerkat_actor import _writer
from meerkat_actor._bench._payloads import sessions, write_pool

marks: dict[str, float] = {}


def _wrap_append(original: Callable[..., int]) -> Callable[..., int]:
    def append(self: Any, first_lsn: int, payloads: list[bytes]) -> int:
        marks["thread_start"] = time.perf_counter()
        written = original(self, first_lsn, payloads)
        marks["thread_end"] = time.perf_counter()
        return written

    return append


def _wrap_commit(original: Callable[..., Any]) -> Callable[..., Any]:
    async def commit(self: Any) -> None:
        marks["writer_wakes"] = time.perf_counter()
        await original(self)
        marks["writer_done"] = time.perf_counter()

    return commit


def _wrap_thread(original: Callable[..., Any]) -> Callable[..., Any]:
    async def run_in_thread(fn: Callable[[], Any]) -> Any:
        result = await original(fn)
        marks["writer_resumes"] = time.perf_counter()
        return result

    return run_in_thread


SPANS = (
    ("call -> writer wakes (checks, apply, encode, hop)", "call", "writer_wakes"),
    ("writer wakes -> thread starts", "writer_wakes", "thread_start"),
    ("thread: frame, write, fdatasync", "thread_start", "thread_end"),
    ("thread ends -> writer resumes", "thread_end", "writer_resumes"),
    ("writer publishes and answers", "writer_resumes", "writer_done"),
    ("writer answered -> caller resumes", "writer_done", "back"),
    ("total", "call", "back"),
)


async def main(commits: int, size: int) -> None:
    _writer.Writer._append = _wrap_append(_writer.Writer._append)  # type: ignore[method-assign]
    _writer.Writer._commit = _wrap_commit(_writer.Writer._commit)  # type: ignore[method-assign]
    _writer.run_in_thread = _wrap_thread(_writer.run_in_thread)
    pool = write_pool(f"commit-{size}", commits)
    session = sessions("bench", 1, size)[0]
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        async with ma.open_store(directory + "/store") as store:
            for write in pool:
                call = time.perf_counter()
                await store.atomic_apply(
                    session.runtime_id,
                    session.delta,
                    write.receipt,
                    write.states,
                    session.session_id,
                )
                rows.append({**marks, "call": call, "back": time.perf_counter()})
    for label, start, end in SPANS:
        spans = [row[end] - row[start] for row in rows]
        print(
            f"{label:50} p50 {statistics.median(spans) * 1e6:7.1f} µs"
            f"  mean {statistics.mean(spans) * 1e6:7.1f} µs"
        )


if __name__ == "__main__":
    trio.run(
        main,
        int(sys.argv[1]) if len(sys.argv) > 1 else 1500,
        int(sys.argv[2]) if len(sys.argv) > 2 else 4096,
    )
