"""The public API: every name in __all__ is exported once, and the core stays light."""

from __future__ import annotations

import subprocess
import sys

import liveupdates
import liveupdates.asgi
import liveupdates.durable


def test_all_is_a_sorted_tuple_of_exported_names() -> None:
    for module in (liveupdates, liveupdates.asgi, liveupdates.durable):
        assert isinstance(module.__all__, tuple)
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name
    public = {
        name
        for name, value in vars(liveupdates).items()
        if not name.startswith("_") and not isinstance(value, type(sys)) and name != "annotations"
    }
    assert public == set(liveupdates.__all__)


def test_the_core_imports_neither_starlette_nor_redis() -> None:
    code = (
        "import sys, liveupdates, liveupdates.asgi, liveupdates.durable; "
        "bad = [m for m in ('starlette', 'redis', 'fastapi', 'pydantic', 'psycopg', "
        "'sqlalchemy', 'django') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
