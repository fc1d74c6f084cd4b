"""The distributions as a user gets them, and the quickstart's commands as written.

The sdist and the wheel are built (``python -m build``), checked (``twine check --strict``, the
metadata: licence, classifiers, project URLs, no development extras), and installed into fresh
virtualenvs. The quickstart's ``pip install`` line runs in a fresh virtualenv as written, with
one substitution: ``liveupdates`` (not on the package index yet) is the wheel built from this
checkout; then its ``uvicorn quickstart:app`` serves ``examples/quickstart.py`` and ``/live``
answers a WebSocket handshake. These tests need the package index (PyPI) for the build backend
and the quickstart's packages; they run in CI (marker ``packaging``).
"""

from __future__ import annotations

import email
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from processes import AppProcess
from support import ws_client

pytestmark = pytest.mark.packaging
ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PUBLISHED_EXTRAS = {"redis", "hiredis", "prometheus", "postgres", "starlette", "examples", "cli"}


def npm_version(pep440: str) -> str:
    """The npm (semver) spelling of a PEP 440 version: 0.1.0.dev0 -> 0.1.0-dev.0."""
    match = re.fullmatch(r"(\d+\.\d+\.\d+)(?:\.?(a|b|rc|dev)(\d+))?", pep440)
    assert match, f"{pep440} has no npm spelling here"
    release, pre, number = match.groups()
    tag = {"a": "alpha", "b": "beta", "rc": "rc", "dev": "dev"}.get(pre or "")
    return f"{release}-{tag}.{number}" if tag else release


def run(*command: str | Path, cwd: Path = ROOT, timeout: float = 180, fresh: bool = False) -> str:
    """Run `command`; ``fresh=True`` (a fresh virtualenv's tools): without PYTHONPATH, so that
    nothing but what the virtualenv installed is imported."""
    env = {k: v for k, v in os.environ.items() if not (fresh and k == "PYTHONPATH")}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fresh_venv(path: Path) -> Path:
    """A new virtualenv (with pip, no system packages); returns its bin/ folder."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


@dataclass
class Dists:
    sdist: Path
    wheel: Path
    metadata: Message


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", out, ROOT)
    (sdist,) = out.glob("liveupdates-*.tar.gz")
    (wheel,) = out.glob("liveupdates-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(zf.read(name))
    return Dists(sdist, wheel, metadata)


def test_versions_in_step() -> None:
    import liveupdates

    version = PYPROJECT["project"]["version"]
    client = json.loads((ROOT / "src/liveupdates/static/package.json").read_text())
    assert liveupdates.__version__ == version
    assert client["version"] == npm_version(version)
    assert npm_version("1.2.3") == "1.2.3" and npm_version("1.2.3rc1") == "1.2.3-rc.1"


def test_twine_check_passes(dists: Dists) -> None:
    out = run(sys.executable, "-m", "twine", "check", "--strict", dists.sdist, dists.wheel)
    assert out.count("PASSED") == 2, out


def test_metadata(dists: Dists) -> None:
    from trove_classifiers import classifiers as known

    meta = dists.metadata
    assert meta["Name"] == "liveupdates"
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier") or []
    assert set(classifiers) <= known, set(classifiers) - known
    for expected in (
        "Typing :: Typed",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Framework :: AsyncIO",
        "Framework :: Trio",
        "Framework :: FastAPI",
    ):
        assert expected in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) >= {"Homepage", "Documentation", "Repository", "Issues", "Changelog"}
    assert all(u.startswith("https://github.com/liveupdates/liveupdates") for u in urls.values())
    assert set(meta.get_all("Provides-Extra") or []) == PUBLISHED_EXTRAS
    requires = " ".join(meta.get_all("Requires-Dist") or [])
    for dev_only in ("pytest", "mypy", "ruff", "mkdocs", "broadcaster", "socketio", "twine"):
        assert dev_only not in requires


def test_the_distributions_hold_the_licence_the_types_and_the_browser_client(
    dists: Dists,
) -> None:
    with zipfile.ZipFile(dists.wheel) as zf:
        names = set(zf.namelist())
    assert {"liveupdates/py.typed", "liveupdates/static/package.json"} <= names
    assert {"liveupdates/static/react.js", "liveupdates/static/client.d.ts"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    with tarfile.open(dists.sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"LICENSE", "pyproject.toml", "src/liveupdates/static/package.json"} <= members
    assert not any(m.startswith("node_modules/") for m in members)


def test_the_wheel_installs_into_a_fresh_virtualenv_and_imports(
    dists: Dists, tmp_path: Path
) -> None:
    bin_ = fresh_venv(tmp_path / "venv")
    run(bin_ / "python", "-m", "pip", "install", "-q", dists.wheel, fresh=True)
    script = (
        "import liveupdates, liveupdates.asgi, liveupdates.testing; "
        "print(liveupdates.__version__, liveupdates.__file__)"
    )
    version, where = run(bin_ / "python", "-c", script, cwd=tmp_path, fresh=True).split()
    assert version == PYPROJECT["project"]["version"]
    assert Path(where).is_relative_to(tmp_path / "venv")


def quickstart_commands() -> tuple[list[list[str]], list[str]]:
    """The quickstart's install commands (its bash block) and its `uvicorn` command."""
    page = (ROOT / "docs/quickstart.md").read_text()
    (block,) = re.findall(r"```bash\n(.*?)```", page, re.S)
    installs = [shlex.split(line) for line in block.splitlines() if line.strip()]
    (serve,) = re.findall(r"Run it with `(uvicorn [^`]+)`", page)
    return installs, shlex.split(serve)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_the_quickstart_commands_run_as_written_in_a_fresh_virtualenv(
    dists: Dists, tmp_path: Path
) -> None:
    installs, serve = quickstart_commands()
    assert installs and all(command[:2] == ["pip", "install"] for command in installs)
    assert serve[:2] == ["uvicorn", "quickstart:app"]
    bin_ = fresh_venv(tmp_path / "venv")
    for command in installs:
        args = [str(dists.wheel) if arg == "liveupdates" else arg for arg in command[2:]]
        run(bin_ / command[0], "install", "-q", *args, cwd=tmp_path, timeout=300, fresh=True)
    shutil.copy(ROOT / "examples/quickstart.py", tmp_path / "quickstart.py")
    server = AppProcess(
        serve[1],
        uvicorn=[str(bin_ / serve[0])],
        args=serve[2:],  # as written (--ws-max-size)
        cwd=tmp_path,
        ready_path="/docs",
        log_dir=tmp_path,
        env={"PYTHONPATH": ""},  # only what the quickstart installed
    )
    server.start(timeout=30)
    try:
        async with ws_client(server) as tab:
            welcome, *subscribed = await tab.handshake(token="alice")
    finally:
        server.stop()
        assert welcome["type"] == "welcome" and welcome["user"] == "alice"
        assert [s["stream"] for s in subscribed] == ["all", "user:alice"]
