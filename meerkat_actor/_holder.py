"""The LOCK file's note: which process holds a durable store open, for the
message of `StoreLocked`, and the counter a live reader checks (`_dry_run`'s
live view).

Rule 1: the note is advice, never data. Recovery never reads it, any content
is valid (an empty file, a stale note, garbage), and nothing is lost when it
is missing or wrong: the `flock` on the file is what excludes a second open.

Rule 2: only the holder of the exclusive lock writes the note, after it took
the lock, through the locking descriptor, in place (`FileIO.write_lock_note`;
never a rename, which would swap an unlocked file in). It is cleared when the
store closes; a process that dies leaves it behind, stale.

Rule 3: a note is believed only about a process that is running: the same
host, boot and PID namespace, a live pid, and (where /proc says) the same
process start time, so a pid reused by another program does not count. A
note of a process that is not running is reported as "last held by ... (not
running)"; one that cannot be checked (another host or namespace) as such.

Theory of operation. The note (docs/format.md section 1) is one line of JSON
ending in a newline: pid, host, argv[0], when the store was opened, when the
process started, and what Rule 3 checks (its start in clock ticks, the boot
id, the PID namespace), plus a random nonce naming this open. After the line
the holder appends one byte before it starts removing files in a checkpoint
and one after: the count of those bytes is odd exactly while files are being
removed, and grows by two with every checkpoint that removes any, which a
live reader compares before and after it reads (a sequence lock). Before
the marks would pass NOTE_LIMIT bytes the holder writes its note anew with a
new nonce (a change any reader sees), so LOCK stays one page; a holder that
cannot write a mark empties LOCK instead (no note: no live read).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Final

from . import _format as fmt
from ._errors import StoreLocked
from ._fs import FileIO

__all__ = [
    "MARK",
    "NOTE_LIMIT",
    "Holder",
    "decode",
    "encode",
    "locked_error",
    "read_note",
    "running",
    "this_process",
]

#: The most of LOCK a reader reads: a note is far shorter.
NOTE_LIMIT: Final = 4096
#: The byte appended around a checkpoint's removals (Theory of operation).
MARK: Final = b"."
_VERSION: Final = 1
#: How often, and how far apart, a reader reads a note that is not there yet
#: (a store opening right now writes it just after it took the lock).
_TRIES: Final = 3
_PAUSE: Final = 0.01


@dataclass(frozen=True)
class Holder:
    """What a LOCK file's note says about the process that wrote it."""

    pid: int
    host: str
    argv0: str
    opened_at: str  # ISO 8601, UTC: when this open took the lock
    process_started_at: str | None  # ISO 8601, UTC, or None where /proc does not say
    start_ticks: int | None  # Linux: /proc/PID/stat field 22
    boot_id: str | None
    pid_namespace: str | None
    nonce: str  # names this one open of the store

    def describe(self) -> str:
        """`pid 4242 on host web-1 (python3 host.py, opened 2025-05-01T10:00:00Z)`."""
        program = f"{self.argv0}, " if self.argv0 else ""
        return f"pid {self.pid} on host {self.host} ({program}opened {self.opened_at})"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def this_process(io: FileIO) -> Holder:
    """The note this process writes when it takes a store's lock now."""
    pid = os.getpid()
    ticks = io.process_start(pid)
    boot = io.boot_time()
    started = None
    if ticks is not None and boot is not None:
        try:
            started = _iso(boot + ticks / os.sysconf("SC_CLK_TCK"))
        except (ValueError, OSError):
            started = None
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else sys.executable
    return Holder(
        pid=pid,
        host=io.host_name(),
        argv0=argv0,
        opened_at=_iso(time.time()),
        process_started_at=started,
        start_ticks=ticks,
        boot_id=io.boot_id(),
        pid_namespace=io.pid_namespace(),
        nonce=secrets.token_hex(8),
    )


def encode(holder: Holder) -> bytes:
    """The note: one line of JSON (keys in a fixed order), then a newline."""
    document = {"meerkat_actor_lock": _VERSION, **asdict(holder)}
    return json.dumps(document, ensure_ascii=True).encode("ascii") + b"\n"


def decode(data: bytes) -> tuple[Holder, int] | None:
    """The holder a note names and the length of its line (newline
    included), or None: no whole line, not a note of a version this build
    reads, or a field of the wrong kind (Rule 1: any content is valid)."""
    end = data.find(b"\n")
    if end < 0:
        return None
    try:
        document = json.loads(data[:end])
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("meerkat_actor_lock") != _VERSION:
        return None

    def text(key: str, *, optional: bool = False) -> str | None:
        value = document.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise TypeError(key)
        return value

    pid, ticks = document.get("pid"), document.get("start_ticks")
    if type(pid) is not int or not 0 < pid < 2**31:
        return None
    if ticks is not None and (type(ticks) is not int or ticks < 0):
        return None
    try:
        holder = Holder(
            pid=pid,
            host=text("host") or "",
            argv0=text("argv0") or "",
            opened_at=text("opened_at") or "",
            process_started_at=text("process_started_at", optional=True),
            start_ticks=ticks,
            boot_id=text("boot_id", optional=True),
            pid_namespace=text("pid_namespace", optional=True),
            nonce=text("nonce") or "",
        )
    except TypeError:
        return None
    return holder, end + 1


def read_note(io: FileIO, lock_path: str, *, wait: bool = True) -> tuple[Holder | None, int]:
    """The holder the note of `lock_path` names (None: no valid note) and
    the file's size. With `wait`, a missing note is read again a few times,
    briefly: a store opening right now writes it just after taking the lock.
    Never raises: a note that cannot be read names nobody."""
    size = 0
    for attempt in range(_TRIES if wait else 1):
        if attempt:
            time.sleep(_PAUSE)
        try:
            data, size = io.read_lock_note(lock_path, NOTE_LIMIT)
        except OSError:
            return None, 0
        decoded = decode(data)
        if decoded is not None:
            return decoded[0], size
    return None, size


def running(io: FileIO, holder: Holder) -> bool | None:
    """Whether the process a note names is running (Rule 3): True, False,
    or None when it cannot be told (another host or PID namespace)."""
    if holder.host != io.host_name():
        return None
    here = io.pid_namespace()
    if holder.pid_namespace is not None and here is not None and holder.pid_namespace != here:
        return None
    boot = io.boot_id()
    if holder.boot_id is not None and boot is not None and holder.boot_id != boot:
        return False  # the machine rebooted since
    if not io.process_exists(holder.pid):
        return False
    if holder.start_ticks is None:
        return True
    started = io.process_start(holder.pid)
    return started is None or started == holder.start_ticks


_HINT: Final = (
    "To read the store while it runs, take a backup in that process (`await"
    " store.backup(path)`) and read the backup; to stop it, send it SIGTERM or SIGINT"
    " (`kill -TERM {pid}`): a host that runs its work in"
    " `meerkat_actor.shutdown_on_signals()` then closes the store cleanly, with a final"
    " checkpoint (docs/operations.md#shutdown)"
)


def locked_error(io: FileIO, directory: str, *, reading: bool = False) -> StoreLocked:
    """The `StoreLocked` for a store directory whose lock could not be
    taken: its message names the holder the note names and says what to do
    instead. `reading`: a read-only command asked for a shared lock, so the
    holder is a store open for writing."""
    lock_path = os.path.join(directory, fmt.LOCK_FILE)
    holder, _ = read_note(io, lock_path)
    message = f"{directory} is locked by another open store"
    alive = None if holder is None else running(io, holder)
    if holder is not None and alive and holder.pid == os.getpid():
        message += (
            f": this process (pid {holder.pid}, opened {holder.opened_at}) has it open;"
            " use the handle it already has, or close that one first"
        )
    elif holder is not None and alive is not False:
        where = (
            ", which is running"
            if alive
            else " (on another host or in another PID namespace: whether it still runs"
            " cannot be checked from here)"
        )
        message += f": {holder.describe()}{where}. " + _HINT.format(pid=holder.pid)
    else:
        if holder is not None:
            message += f": it was last held by {holder.describe()}, which is not running; the"
        else:
            message += ": the"
        others = (
            "an older meerkat_actor"
            if reading
            else (
                "a read-only command (`meerkat-actor inspect`, `verify`, `dump`, `export-sqlite`)"
                " reading it, or an older meerkat_actor"
            )
        )
        message += (
            f" process that holds it now left no note: {others}, or a store being opened"
            f" right now. `fuser -v {lock_path}` names it"
        )
    error = StoreLocked(message)
    error.directory = directory
    if holder is not None and alive is not False:
        error.pid, error.host = holder.pid, holder.host
    return error
