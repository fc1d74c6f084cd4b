"""A Griffe extension for the API reference: reStructuredText literal blocks as Markdown.

liveupdates' docstrings introduce code with reST's ``::`` ("publishes::", or a line of its own),
then an indented block. Markdown would print the ``::`` as text; this turns each such block
into a fenced one (``python`` when it parses as Python, top-level ``await`` allowed, ``text``
otherwise) and drops the ``::`` (``publishes::`` becomes ``publishes:``). Docstrings in the
source stay as they are: readable with ``help()``.
"""

from __future__ import annotations

import ast
import textwrap
from typing import Any

import griffe

_FLAGS = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def _language(code: str) -> str:
    try:
        compile(code, "<docstring>", "exec", flags=_FLAGS)
    except SyntaxError:
        return "text"
    return "python"


def convert(text: str) -> str:
    """`text` with every ``::`` literal block fenced."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        # The block: the blank lines after the marker, then every line indented deeper than it.
        indent = len(line) - len(line.lstrip())
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        k = j
        while k < len(lines) and (
            not lines[k].strip() or len(lines[k]) - len(lines[k].lstrip()) > indent
        ):
            k += 1
        while k > j and not lines[k - 1].strip():
            k -= 1
        if k == j:  # no indented block: leave the line alone
            out.append(line)
            i += 1
            continue
        head = line.rstrip()[:-2].rstrip()
        if head.strip():
            out.extend([head + ":", ""])
        code = textwrap.dedent("\n".join(lines[j:k]))
        pad = " " * indent
        out.append(f"{pad}```{_language(code)}")
        out.extend(pad + c if c else c for c in code.split("\n"))
        out.append(f"{pad}```")
        i = k
    return "\n".join(out)


class RstLiterals(griffe.Extension):
    """Fence the ``::`` literal blocks of every docstring Griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
