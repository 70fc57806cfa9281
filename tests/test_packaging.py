"""The distribution a user installs (issue 16): `meerkat-actor`, as a release
would build it (`python -m build`: the sdist, then the wheel from the sdist).

Fast: pyproject.toml's metadata (the name, one version, classifiers, the
license, `project.urls`), and the README as the long description (its links
absolute, into the repository, to files that exist). Slow (marked; ~20-30 s,
most of it pip installing the dependencies into a new environment): build
both, check what each holds and the wheel's METADATA, install the wheel into
a fresh venv and run the command and the demo twice from it, in a directory
outside the source tree. .ci/run runs the same steps as a shell step, and
hands the files it built to these tests (`MEERKAT_TEST_DIST`).
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # build's own dependency

import meerkat_actor as ma

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
NAME = "meerkat-actor"
WHEEL_NAME = NAME.replace("-", "_")  # the wheel's and sdist's file names
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


# --- pyproject.toml ----------------------------------------------------------------------------


def test_the_distribution_is_named_and_versioned_once():
    assert PROJECT["name"] == NAME
    # One source of the version: the package's __version__, read by setuptools.
    assert "version" not in PROJECT
    assert PROJECT["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "meerkat_actor.__version__"
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+", ma.__version__)
    assert PROJECT["scripts"] == {NAME: "meerkat_actor.__main__:main"}


def test_classifiers_say_what_is_true():
    classifiers = set(PROJECT["classifiers"])
    for required in (
        "Framework :: Trio",
        "Framework :: AsyncIO",
        "Typing :: Typed",
        "Operating System :: POSIX",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
    ):
        assert required in classifiers, required
    # POSIX only (flock, O_DIRECTORY, fsync of directories): not "OS Independent".
    assert "Operating System :: OS Independent" not in classifiers
    # The license is an SPDX expression (PEP 639): no License :: classifier.
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert PROJECT["requires-python"] == ">=3.11"
    assert PROJECT["readme"] == "README.md"


def test_project_urls_point_into_one_repository():
    urls = PROJECT["urls"]
    assert set(urls) == {"Homepage", "Documentation", "Issues", "Changelog"}
    home = urls["Homepage"]
    assert home.startswith("https://")
    assert all(url.startswith(home + "/") for name, url in urls.items() if name != "Homepage")
    for name in ("Documentation", "Changelog"):
        path = urls[name].removeprefix(home + "/blob/main/")
        assert (ROOT / path).is_file(), urls[name]


def test_the_package_is_typed():
    assert (ROOT / "meerkat_actor" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["meerkat_actor"]


def _links(text: str) -> list[str]:
    without_code = re.sub(r"```.*?```", "", text, flags=re.S)
    return _LINK.findall(without_code)


def test_the_readme_works_as_the_long_description():
    """On the package index the README is the project's page, where a
    relative link (docs/cli.md) leads nowhere: every link is absolute, and
    those into the repository name files that exist here."""
    links = _links((ROOT / "README.md").read_text())
    relative = [link for link in links if not _SCHEME.match(link) and not link.startswith("#")]
    assert relative == [], "README.md has relative links, broken on the package index"
    tree = PROJECT["urls"]["Homepage"] + "/blob/main/"
    into_repository = [link for link in links if link.startswith(tree)]
    assert len(into_repository) >= 10
    missing = [
        link
        for link in into_repository
        if not (ROOT / link.removeprefix(tree).split("#", 1)[0]).exists()
    ]
    assert missing == []


def test_the_link_check_finds_links():
    assert _links("see [a](docs/a.md) and [b](https://x.y/b.md#c)\n```\n[c](d)\n```") == [
        "docs/a.md",
        "https://x.y/b.md#c",
    ]


# --- build, inspect, install, run ------------------------------------------------------------


def _run(args: list[object], cwd: Path | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _tracked_files() -> list[str] | None:
    """The files git tracks here, or None outside a git work tree."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = _run(["git", "-C", ROOT, "ls-files", "-z"])
    return [name for name in out.split("\0") if name]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the sdist and the wheel of this tree: built here,
    or the ones .ci/run built a moment ago (`MEERKAT_TEST_DIST`)."""
    built = os.environ.get("MEERKAT_TEST_DIST")
    if built:
        return Path(built)
    if importlib.util.find_spec("build") is None:
        pytest.skip("the build package is not installed (it is in the test extra)")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT])
    return out


def _one(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_its_metadata(dist: Path):
    wheel = _one(dist, f"{WHEEL_NAME}-{ma.__version__}-py3-none-any.whl")
    info = f"{WHEEL_NAME}-{ma.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    package = {n for n in names if not n.startswith(info + "/")}
    source = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "meerkat_actor").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert package == source | {"meerkat_actor/py.typed"}
    assert f"{info}/licenses/LICENSE" in names
    assert metadata["Name"] == NAME
    assert metadata["Version"] == ma.__version__
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert set(metadata.get_all("Classifier")) == set(PROJECT["classifiers"])
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert urls == PROJECT["urls"]
    assert metadata.get_payload().strip() == (ROOT / "README.md").read_text().strip()
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    assert {(r.name, r.specifier) for r in requires if r.marker is None} == {
        (r.name, r.specifier) for r in map(Requirement, PROJECT["dependencies"])
    }
    assert f"{NAME} = meerkat_actor.__main__:main" in entry_points


@pytest.mark.slow
def test_the_sdist_holds_the_repository(dist: Path):
    """The sdist builds the wheel (`python -m build` made the wheel from it)
    and holds what it takes to read the docs and run the tests: every file
    of the repository but .gitignore."""
    sdist = _one(dist, f"{WHEEL_NAME}-{ma.__version__}.tar.gz")
    prefix = f"{WHEEL_NAME}-{ma.__version__}/"
    with tarfile.open(sdist) as archive:
        names = {m.name.removeprefix(prefix) for m in archive.getmembers() if m.isfile()}
    for required in ("PKG-INFO", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        assert required in names, required
    assert "meerkat_actor/py.typed" in names
    assert "docs/cli.md" in names
    assert "tests/test_cli.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    tracked = _tracked_files()
    if tracked is None:
        pytest.skip("not a git work tree: the tracked files are unknown")
    # setuptools leaves out a symbolic link that leads nowhere (three cases
    # of the damaged-store corpus are such links): nothing else is missing.
    dangling = {name for name in tracked if not (ROOT / name).exists()}
    assert all((ROOT / name).is_symlink() for name in dangling)
    missing = sorted(set(tracked) - names - dangling - {".gitignore"})
    assert missing == []


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_demo(dist: Path, tmp_path: Path):
    wheel = _one(dist, "*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    _run([venv / "bin" / "pip", "install", "--quiet", wheel])
    work = tmp_path / "work"  # outside the source tree: nothing shadows the install
    work.mkdir()
    where = _run(
        [venv / "bin" / "python", "-c", "import meerkat_actor as m; print(m.__file__)"], work
    )
    assert Path(where.strip()).is_relative_to(venv)
    assert (Path(where.strip()).parent / "py.typed").is_file()
    version = _run([venv / "bin" / "meerkat-actor", "--version"], work)
    assert version == f"{NAME} {ma.__version__}\n"
    assert "documentation: " + PROJECT["urls"]["Documentation"] in _run(
        [venv / "bin" / "meerkat-actor", "--help"], work
    )
    first = _run([venv / "bin" / "meerkat-actor", "demo"], work)
    second = _run([venv / "bin" / "python", "-m", "meerkat_actor", "demo"], work)
    assert "a new store" in first
    assert "recovered from earlier runs: " in second
    for out in (first, second):
        assert "reopened: every acknowledged write is back" in out
    assert (work / "meerkat-demo-store" / "FORMAT").is_file()
