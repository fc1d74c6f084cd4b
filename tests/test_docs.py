"""The documentation site as a reader sees it: `mkdocs build --strict`, then every page's HTML.

A snippet include that did not run (``--8<--``, or ``--8 < --`` after a Python formatter read
it as code) would show its marker instead of the file; a ``python`` block must compile.
"""

from __future__ import annotations

import ast
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BLOCK = re.compile(r'<div class="language-(\w+) highlight"><pre>(.*?)</pre></div>', re.S)
MARKER = re.compile(r"--\s*8\s*<\s*--")


def text(fragment: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded; line anchors dropped)."""
    fragment = re.sub(r'<span class="linenos">.*?</span>', "", fragment, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    pages = {str(p.relative_to(out)): p.read_text("utf-8") for p in out.rglob("*.html")}
    assert "quickstart/index.html" in pages
    return pages


def test_no_page_shows_a_snippet_include_marker(site: dict[str, str]) -> None:
    shown = {
        page: match.group(0)
        for page, source in site.items()
        if (match := MARKER.search(text(source))) is not None
    }
    assert shown == {}


def test_the_included_examples_appear_on_their_pages(site: dict[str, str]) -> None:
    quickstart = text(site["quickstart/index.html"])
    assert (ROOT / "examples/quickstart.py").read_text().splitlines()[-1].strip() in quickstart
    dashboard = text(site["jobs-dashboard/index.html"])
    live = (ROOT / "examples/jobs_dashboard/live.py").read_text()
    first_def = next(line for line in live.splitlines() if line.startswith(("def ", "class ")))
    assert first_def in dashboard


def test_every_python_block_compiles(site: dict[str, str]) -> None:
    blocks = [
        (page, text(code))
        for page, source in sorted(site.items())
        for language, code in BLOCK.findall(source)
        if language in ("python", "py")
    ]
    assert len(blocks) > 10
    broken = []
    for page, code in blocks:
        try:
            compile(code, page, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        except SyntaxError as err:
            broken.append(f"{page}:{err.lineno}: {err.msg}\n{code}")
    assert broken == []
