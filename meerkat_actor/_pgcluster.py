"""A throwaway PostgreSQL cluster for tests and the bench: `initdb` and
`pg_ctl` in a temporary directory, reachable only through a Unix socket there.

Rule 1: nothing outside the temporary directory is created or changed. The
server listens on no TCP address (`listen_addresses=''`); its socket, data
directory and log live in the directory, which `stop()` removes.

Rule 2: the server runs as an unprivileged user. PostgreSQL refuses to run as
root; when this process is root the cluster belongs to the `postgres` user
(Debian's packages create it) or else `nobody`, and only the temporary
directory is handed to that user.

Theory of operation. `find_binaries()` looks for a directory holding
`initdb`, `pg_ctl` and `postgres`: `$MEERKAT_PG_BINDIR`, then beside the
`pg_ctl` on `PATH`, then Debian's `/usr/lib/postgresql/<version>/bin` (the
newest version first). `TemporaryCluster(bindir).start()` runs `initdb`
(trust authentication for the superuser `meerkat`, UTF-8, C locale) and
`pg_ctl start`; `dsn` is a libpq connection string for it. `restart()` and
`stop(mode="immediate")` exist for the failure tests (a server that goes
away under load). Every method blocks: from trio, call it in a thread.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Final, final

__all__ = ["SUPERUSER", "TemporaryCluster", "find_binaries"]

#: The cluster's superuser (trust authentication on its Unix socket).
SUPERUSER: Final = "meerkat"
_PORT: Final = 5432
_BINARIES: Final = ("initdb", "pg_ctl", "postgres")


def _has_binaries(directory: str) -> bool:
    return all(os.access(os.path.join(directory, name), os.X_OK) for name in _BINARIES)


def _version_of(directory: str) -> tuple[int, ...]:
    found = re.search(r"/postgresql/([0-9.]+)/bin$", directory)
    return tuple(int(part) for part in found.group(1).split(".") if part) if found else ()


def find_binaries() -> str | None:
    """A directory with PostgreSQL's `initdb`, `pg_ctl` and `postgres`, or `None`."""
    candidates: list[str] = []
    configured = os.environ.get("MEERKAT_PG_BINDIR")
    if configured:
        candidates.append(configured)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(os.path.dirname(os.path.realpath(on_path)))
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_of, reverse=True))
    for directory in candidates:
        if _has_binaries(directory):
            return directory
    return None


def _server_user() -> str | None:
    """The user to run the server as when this process is root, else `None`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and there is no postgres or nobody user to run as")


@final
class TemporaryCluster:
    """One PostgreSQL cluster in a new temporary directory (a context manager
    that starts it on entry and stops and removes it on exit)."""

    def __init__(self, bindir: str, *, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir
        self.settings = dict(settings or {})
        self.directory: Path | None = None
        self.user = _server_user()
        self.running = False

    @property
    def data(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the cluster was not started")
        return self.directory / "data"

    @property
    def dsn(self) -> str:
        """A libpq connection string for the cluster's `postgres` database."""
        if self.directory is None:
            raise RuntimeError("the cluster was not started")
        return f"host={self.directory} port={_PORT} user={SUPERUSER} dbname=postgres"

    def _run(self, *args: str) -> None:
        command = [os.path.join(self.bindir, args[0]), *args[1:]]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            user=self.user,
            cwd=self.directory,
            check=False,
        )
        if done.returncode != 0:
            log = self._log_tail()
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}{log}"
            )

    def _log_tail(self) -> str:
        if self.directory is None:
            return ""
        try:
            lines = (self.directory / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(lines[-20:]) if lines else ""

    def start(self) -> TemporaryCluster:
        """Create the cluster (first call only) and start the server; waits
        until it accepts connections."""
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="meerkat-pg-"))
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            )
        options = [f"-k {self.directory}", "-c listen_addresses=''", f"-p {_PORT}"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "server.log"),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`mode` as `pg_ctl stop -m`: smart, fast,
        immediate); the cluster stays and can be started again."""
        if self.running:
            self.running = False
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (dropping every connection) and start it again."""
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        """Stop the server if it runs and remove the whole directory."""
        try:
            self.stop("immediate")
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def __enter__(self) -> TemporaryCluster:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
