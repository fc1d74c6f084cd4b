"""The API reference (docs/reference/, mkdocstrings) documents every public name of every tier."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# The public tiers (docs/architecture.md) and the page of each.
TIERS = {
    "liveupdates": "liveupdates",
    "liveupdates.errors": "errors",
    "liveupdates.asgi": "asgi",
    "liveupdates.backplanes": "backplanes",
    "liveupdates.session": "session",
    "liveupdates.testing": "testing",
    "liveupdates.durable": "durable",
    "liveupdates.prometheus": "prometheus",
}


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:  # liveupdates.errors: what it defines
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module_name
        ]
    return list(names)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir"]
    result = subprocess.run([*command, str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def test_every_tier_has_a_page_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in TIERS.values():
        assert f"reference/{page}.md" in nav, page
        assert (ROOT / "docs" / "reference" / f"{page}.md").exists(), page


@pytest.mark.timeout(120)
def test_every_public_name_has_an_entry(site: Path) -> None:
    for module_name, page in TIERS.items():
        html = (site / "reference" / page / "index.html").read_text()
        anchors = set(re.findall(r'id="([\w.]+)"', html))
        missing = [n for n in public_names(module_name) if f"{module_name}.{n}" not in anchors]
        assert not missing, f"{module_name}: {missing}"


def test_no_rest_literal_marker_is_left(site: Path) -> None:
    for page in TIERS.values():
        html = (site / "reference" / page / "index.html").read_text()
        assert not re.search(r"::</p>", html), page
