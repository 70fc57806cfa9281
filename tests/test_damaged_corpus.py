"""The damaged-store corpus (`tests/fixtures/damaged/`, made by
`tests/fixtures/make_damaged.py`): every case opened with `open_store` and
checked with `meerkat-actor verify`, each against the case's
`tests/fixtures/damaged/clean-log/expected.json` (and its siblings) and
against each other.

For each case, on a copy in tmp:

1. `verify --json` (in process, through the command line's `main`) must
   give the expected exit status, result and problems (severity and file),
   and change no file;
2. `open_store` must either open and show exactly the expected state (the
   full content read back, and its digest), with the torn tail cut or the
   crash artifact removed where the case says so, then take a write at the
   next LSN; or raise exactly the expected error class naming the expected
   file (and byte offset, where the spec fixes it), never anything else and
   never hang;
3. verify and open must agree: "corrupt" exactly when open raises
   `CorruptStore`, at the same file and offset; a torn tail open cuts is a
   verify note at the same place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

import meerkat_actor as ma
from meerkat_actor import _dry_run
from meerkat_actor.__main__ import main

CORPUS = Path(__file__).parent / "fixtures" / "damaged"
GENERATOR = Path(__file__).parent / "fixtures" / "make_damaged.py"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
#: What a case must not take longer than (open or verify): a hang is a failure.
TIMEOUT = 20.0


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_damaged", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_damaged"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _expected(name: str) -> dict[str, Any]:
    with open(CORPUS / name / "expected.json") as file:
        document: dict[str, Any] = json.load(file)
    return document


def _copy(name: str, tmp_path: Path, setup: list[dict[str, str]]) -> Path:
    """The case's files in `tmp_path/store`, with the setup the repo cannot hold."""
    store = tmp_path / "store"
    shutil.copytree(
        CORPUS / name, store, symlinks=True, ignore=shutil.ignore_patterns("expected.json")
    )
    for step in setup:
        path = store / step["name"]
        if step["make"] == "fifo":
            os.mkfifo(path)
        elif step["make"] == "chmod000":
            if os.geteuid() == 0:
                pytest.skip("running as root: a mode 000 file is still readable to root")
            path.chmod(0)
        else:  # pragma: no cover - a generator bug
            raise AssertionError(step)
    return store


def _listing(store: Path) -> dict[str, object]:
    """Every entry under `store`: a file's bytes, a symlink's target, a FIFO's mode."""
    out: dict[str, object] = {}
    for root, dirs, files in os.walk(store):
        for name in dirs + files:
            path = Path(root, name)
            rel = str(path.relative_to(store))
            if path.is_symlink():
                out[rel] = ("symlink", os.readlink(path))
            elif path.is_dir():
                out[rel] = "dir"
            elif path.is_file() and os.access(path, os.R_OK):
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = ("other", path.lstat().st_mode)
    return out


def _verify(
    store: Path, options: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    args = ["verify", "--json"]
    if "max_record_bytes" in options:
        args += ["--max-record-bytes", str(options["max_record_bytes"])]
    capsys.readouterr()
    status = main([*args, str(store)])
    out = capsys.readouterr().out
    document: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return status, document


def _rel(store: Path, path: str | None) -> str | None:
    if path is None:
        return None
    real = os.path.realpath(store)
    if path == real:
        return None
    assert path.startswith(real + os.sep), (path, real)
    return path[len(real) + 1 :]


async def _open(store: Path, options: dict[str, Any], expected: dict[str, Any]) -> object:
    """Open the store; check what the case says about the open store; write
    one record. Returns the content read back (or the read error)."""
    kwargs: dict[str, Any] = {}
    if "max_record_bytes" in options:
        kwargs["max_record_bytes"] = options["max_record_bytes"]
    with trio.fail_after(TIMEOUT):
        async with ma.open_store(store, **kwargs) as s:
            if "truncated_at" in expected:
                segment = store / _truncated_file(expected)
                assert segment.stat().st_size == expected["truncated_at"]
            for name in expected.get("removed", []):
                assert not (store / name).is_symlink(), name
                assert not (store / name).exists(), name
            result: object
            try:
                result = await GEN.read_content(s)
            except ma.ReadFailed as exc:
                result = exc
            await s.persist_auth_oauth_flow_snapshot(b"after-recovery")
    return result


def _truncated_file(expected: dict[str, Any]) -> str:
    name: str = expected.get("truncated_file", GEN.seg_name(1))
    return name


@pytest.mark.parametrize("name", CASES)
def test_case(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = _expected(name)
    want_open, want_verify = case["open"], case["verify"]
    store = _copy(name, tmp_path, case["setup"])
    before = _listing(store)

    # 1. verify: the expected verdict, and nothing changed.
    status, report = _verify(store, case["options"], capsys)
    assert _listing(store) == before, "verify changed the store"
    assert status == want_verify["exit"], report
    if "error" in want_verify:
        assert report["error"]["kind"] == want_verify["error"], report
        problems: list[dict[str, Any]] = []
    else:
        assert report["result"] == want_verify["result"], report
        problems = report["problems"]
        found = sorted([p["severity"], _rel(store, p["file"])] for p in problems)
        assert found == sorted(want_verify["problems"]), report

    # 2. open.
    error: BaseException | None = None
    content: object = None
    try:
        content = trio.run(_open, store, case["options"], want_open)
    except trio.TooSlowError:
        pytest.fail(f"open_store hung on {name}")
    except ma.ReadFailed as exc:
        error = exc
    if want_open["outcome"] == "refused":
        assert error is not None, f"{name} opened; expected {want_open['error']}"
        assert type(error).__name__ == want_open["error"], repr(error)
        message = str(error)
        if want_open["file"] is not None:
            path = os.path.join(os.path.realpath(store), want_open["file"])
            assert path in message, message
            assert isinstance(error, ma.CorruptStore) or want_open["error"] != "CorruptStore"
            if isinstance(error, ma.CorruptStore):
                assert error.path == path, (error.path, path)
        if want_open["offset"] is not None:
            assert isinstance(error, ma.CorruptStore)
            assert error.offset == want_open["offset"], message
        for word in want_open["words"]:
            assert word.lower() in message.lower(), (word, message)
        if want_open.get("unchanged"):
            assert _listing(store) == before, "a refused open changed the store"
    else:
        assert error is None, f"{name} refused: {error!r}"
        read_error = want_open.get("read_error")
        if read_error is not None:
            assert type(content).__name__ == read_error["error"], content
            for word in read_error["words"]:
                assert word.lower() in str(content).lower(), (word, content)
        else:
            assert content == want_open["content"]
            assert isinstance(content, dict)
            assert GEN.digest(content) == want_open["digest"]
        # The write after recovery went to the next LSN, and is there after a reopen.
        view = _dry_run.read_store(str(store))
        assert view.last_lsn == want_open["last_lsn"] + 1
        assert view.state.oauth_flow_snapshot == b"after-recovery"

    # 3. agreement.
    if isinstance(error, ma.CorruptStore):
        corrupt = [p for p in problems if p["severity"] == "corrupt"]
        assert len(corrupt) == 1, report
        assert corrupt[0]["file"] == (error.path or os.path.realpath(store)), report
        assert corrupt[0]["offset"] == error.offset, report
    else:
        assert report.get("result") != "corrupt", report
    if "truncated_at" in want_open:
        # Where opening cuts, verify reports: a note (a torn tail), or damage
        # when the snapshot holds the record (it was synced).
        places = [(p["file"], p["offset"]) for p in problems if p["severity"] != "corrupt"]
        file = os.path.join(os.path.realpath(store), _truncated_file(want_open))
        assert (file, want_open["truncated_at"]) in places, report


def test_every_case_has_an_expectation() -> None:
    assert len(CASES) >= 100
    for name in CASES:
        case = _expected(name)
        assert case["open"]["outcome"] in ("opens", "refused"), name
        assert "exit" in case["verify"], name


def test_corpus_is_what_the_generator_makes(tmp_path: Path) -> None:
    """The committed corpus is exactly what tests/fixtures/make_damaged.py makes
    with this build."""
    out = tmp_path / "damaged"
    subprocess.run([sys.executable, str(GENERATOR), str(out)], check=True, capture_output=True)
    made = {p.name for p in out.iterdir()}
    assert made == set(CASES)
    for name in CASES:
        assert _listing(out / name) == _listing(CORPUS / name), name


@pytest.mark.parametrize(("name", "status"), [("clean-log", 0), ("flip-record3-crc", 5)])
def test_cli_subprocess(name: str, status: int, tmp_path: Path) -> None:
    """`python -m meerkat_actor verify DIR` as an operator runs it."""
    store = _copy(name, tmp_path, [])
    done = subprocess.run(
        [sys.executable, "-m", "meerkat_actor", "verify", str(store)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == status, done.stdout + done.stderr
    assert ("result: corrupt" in done.stdout) == (status == 5)
