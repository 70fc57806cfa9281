"""The I/O layer: every file operation of the package goes through here.

Rule 1: nothing else in the package opens, reads, writes, syncs, renames,
truncates, locks or deletes a file (SQLite's own access to its database
aside). Tests replace the layer (subclass `FileIO`, pass it as
`open_store(path, _io=...)`) to inject a failure or a stop at any step.

Rule 2: these calls block. They run in worker threads (`trio.to_thread`),
never on the trio thread.

Rule 3: no retries. A failed `sync` is reported once and never repeated: after
an fsync error the kernel may have dropped the dirty pages, so a second fsync
could "succeed" without the data (the PostgreSQL fsync lesson).

Rule 4: never block on what is not a regular file. Every open of an
existing file uses O_NONBLOCK (so a FIFO cannot hang it) and refuses,
with an `OSError` naming it, anything but a regular file; `file_kind` says
what an entry is without opening it.

Rule 5: the lock is a `flock` (BSD) lock, which belongs to the open file
description: closing another descriptor of the same file (reading the LOCK
file's note, `read_lock_note`) never releases it, as closing would release
a POSIX `fcntl`/`lockf` lock. The note is written through the descriptor
that holds the lock, in place (`write_lock_note`): a rename would put a
new, unlocked file under the name, and two stores could then be open.

Files are created with mode 0600 and directories with 0700 (the umask can only
remove bits); the store holds OAuth PKCE verifiers.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from typing import final

__all__ = ["FileIO", "Handle", "LockHandle", "not_regular"]

FILE_MODE = 0o600
DIR_MODE = 0o700


def not_regular(mode: int) -> str | None:
    """What a file of this `st_mode` is, if it is not a regular file
    ("a directory", "a FIFO", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _open_regular(path: str, flags: int, mode: int = FILE_MODE) -> int:
    """`os.open` that never blocks on a FIFO (O_NONBLOCK, which changes
    nothing for a regular file) and refuses anything but a regular file."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    try:
        kind = not_regular(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if kind is not None:
        os.close(fd)
        code = errno.EISDIR if kind == "a directory" else errno.EINVAL
        raise OSError(code, f"{kind}, not a regular file", path)
    return fd


@final
class Handle:
    """An open file: its descriptor and path (for messages)."""

    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def __repr__(self) -> str:
        return f"<Handle {self.path} fd={self.fd}>"


@final
class LockHandle:
    """A held `flock` on a lock file; `FileIO.unlock` releases it.
    `noted`: a note was written into the file through it."""

    __slots__ = ("fd", "noted", "path")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.noted = False


class FileIO:
    """The real file system. Subclass and override a method to inject faults.

    Every method raises `OSError` on failure and nothing else.
    """

    # --- directories ---------------------------------------------------------------

    def make_dir(self, path: str) -> None:
        """Create `path` (and missing parents) with mode 0700 if it does not exist."""
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)

    def make_new_dir(self, path: str) -> None:
        """Create the directory `path` (0700); fails if anything has that name."""
        os.mkdir(path, DIR_MODE)

    def make_private(self, path: str) -> None:
        """Set directory `path` to mode 0700 (a new store in an existing directory)."""
        os.chmod(path, DIR_MODE)

    def list_dir(self, path: str) -> list[str]:
        """The names in directory `path`."""
        return os.listdir(path)

    def file_kind(self, path: str) -> str | None:
        """What `path` is if it is not a regular file ("a directory", "a
        FIFO", "a dangling symbolic link", ...); None for a regular file, or
        a symlink to one, or nothing there. Opens nothing, so never blocks."""
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return "a dangling symbolic link" if os.path.lexists(path) else None
        except OSError as exc:
            # A symlink that resolves to nothing in another way (a loop, or
            # a path through a regular file) is dangling too, not an I/O error.
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
                return "a dangling symbolic link"
            raise
        return not_regular(mode)

    def sync_dir(self, path: str) -> None:
        """fsync the directory itself, making creations, renames and deletions in it durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str, *, shared: bool = False) -> LockHandle:
        """Take a non-blocking `flock` on the file `path`.

        Args:
            path: the lock file.
            shared: False: an exclusive lock, the file created (0600) if
                missing (an open store). True: a shared lock on an existing
                file, opened read-only (a read-only tool; it creates nothing).

        Returns:
            The held lock.

        Raises:
            BlockingIOError: another open file description holds a lock that
                conflicts (this process or another).
            FileNotFoundError: `shared` and there is no such file.
        """
        if shared:
            fd = _open_regular(path, os.O_RDONLY)
        else:
            fd = _open_regular(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise BlockingIOError(exc.errno, f"{path} is locked") from exc
            raise
        return LockHandle(fd, path)

    def unlock(self, lock: LockHandle) -> None:
        """Release a lock taken by `lock`: if a note was written into the
        file through it, cut the file to empty first (the note goes with the
        lock; a process that dies leaves it), then close the descriptor,
        which releases the lock even if the cut failed."""
        try:
            if lock.noted:
                os.ftruncate(lock.fd, 0)
        finally:
            os.close(lock.fd)

    def write_lock_note(self, lock: LockHandle, data: bytes) -> None:
        """Make `data` the whole content of a file this process holds the
        exclusive lock on, in place, through the locking descriptor (Rule
        5). Not synced: the note is advice about the holder, not data
        (docs/format.md section 1). `unlock` empties the file again.

        Raises:
            OSError: the write failed (the lock is held all the same).
        """
        self.extend_lock_note(lock, 0, data)
        os.ftruncate(lock.fd, len(data))

    def extend_lock_note(self, lock: LockHandle, offset: int, data: bytes) -> None:
        """Write `data` at byte `offset` of a file this process holds the
        exclusive lock on, through the locking descriptor (Rule 5); at its
        end, that appends. Not synced, like `write_lock_note`.

        Raises:
            OSError: the write failed (the lock is held all the same).
        """
        lock.noted = True
        view = memoryview(data)
        while view:
            written = os.pwrite(lock.fd, view, offset)
            view = view[written:]
            offset += written

    def read_lock_note(self, path: str, limit: int) -> tuple[bytes, int]:
        """The first `limit` bytes of the lock file `path` and its size in
        bytes, read without taking the lock and without disturbing one this
        process holds (Rule 5).

        Raises:
            OSError: it cannot be read (FileNotFoundError: there is none).
        """
        fd = _open_regular(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, limit, 0)
        finally:
            os.close(fd)
        return data, size

    # --- processes (who holds a lock) --------------------------------------------------

    def host_name(self) -> str:
        """This machine's host name."""
        return socket.gethostname()

    def process_start(self, pid: int) -> int | None:
        """When process `pid` started, in clock ticks since boot (Linux's
        /proc/PID/stat, field 22): with the pid, it names one process, even
        after the pid is reused. None where there is no such process or no
        /proc to say."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                text = file.read()
            # The command name (field 2) may hold spaces and parentheses.
            return int(text[text.rindex(b")") + 2 :].split()[19])
        except (OSError, ValueError, IndexError):
            return None

    def boot_time(self) -> float | None:
        """When the machine booted (seconds since the epoch), or None."""
        try:
            with open("/proc/stat", "rb") as file:
                for line in file:
                    if line.startswith(b"btime "):
                        return float(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def boot_id(self) -> str | None:
        """This boot's random id (Linux), or None: a pid of an earlier boot
        names no running process."""
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
                return file.read().strip() or None
        except (OSError, ValueError):
            return None

    def pid_namespace(self) -> str | None:
        """This process's PID namespace (Linux: `pid:[4026531836]`), or
        None: a pid means a process only inside its namespace."""
        try:
            return os.readlink("/proc/self/ns/pid")
        except OSError:
            return None

    def process_exists(self, pid: int) -> bool:
        """Whether a process with this pid exists (signal 0: nothing is sent)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists, and belongs to another user
        except OSError:
            return False
        return True

    # --- files ---------------------------------------------------------------------

    def create(self, path: str) -> Handle:
        """Create a new file for writing (0600); fails if it exists."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        return Handle(fd, path)

    def create_private(self, path: str) -> None:
        """Create the file `path` names, empty, with mode 0600, unless something
        is there, and make its directory entry durable (for a file another
        library then opens, such as a SQLite database).

        The path is resolved first: a dangling symlink gets its target created
        here, 0600, not by the other library with its default mode (0644 under
        the usual umask). If something exists there, nothing is done.

        Raises:
            OSError: the file cannot be created, or the directory not synced.
        """
        target = os.path.realpath(path)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except FileExistsError:
            return
        os.close(fd)
        self.sync_dir(os.path.dirname(target))

    def open_write(self, path: str) -> Handle:
        """Open an existing file for writing at given offsets (`write_at`)."""
        fd = _open_regular(path, os.O_WRONLY)
        return Handle(fd, path)

    def write(self, handle: Handle, data: bytes) -> None:
        """Write all of `data` at the file position (looping over short writes)."""
        view = memoryview(data)
        while view:
            written = os.write(handle.fd, view)
            view = view[written:]

    def write_at(self, handle: Handle, offset: int, data: bytes) -> None:
        """Write all of `data` at byte `offset` (looping over short writes)."""
        view = memoryview(data)
        while view:
            written = os.pwrite(handle.fd, view, offset)
            view = view[written:]
            offset += written

    def sync(self, handle: Handle) -> None:
        """Make the file's data durable (fdatasync where the platform has it)."""
        if hasattr(os, "fdatasync"):
            os.fdatasync(handle.fd)
        else:  # pragma: no cover - macOS and others
            os.fsync(handle.fd)

    def close(self, handle: Handle) -> None:
        os.close(handle.fd)

    def open_read(self, path: str) -> Handle:
        """Open an existing file for reading at given offsets (`read_at`)."""
        fd = _open_regular(path, os.O_RDONLY)
        return Handle(fd, path)

    def read_at(self, handle: Handle, offset: int, length: int) -> bytes:
        """Up to `length` bytes at byte `offset` (fewer only at the end of the file)."""
        parts = []
        while length > 0:
            part = os.pread(handle.fd, min(length, 1 << 24), offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read(self, path: str) -> bytes:
        """The whole content of the file `path`."""
        with open(_open_regular(path, os.O_RDONLY), "rb") as file:
            return file.read()

    def size(self, path: str, *, follow_symlinks: bool = True) -> int:
        """The size of the file `path` (of a symlink itself, if not `follow_symlinks`)."""
        return os.stat(path, follow_symlinks=follow_symlinks).st_size

    def truncate(self, path: str, size: int) -> None:
        """Cut the file `path` to `size` bytes and make that durable."""
        fd = _open_regular(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, source: str, target: str) -> None:
        """Atomically rename `source` to `target` (same directory)."""
        os.rename(source, target)

    def remove(self, path: str) -> None:
        os.unlink(path)
