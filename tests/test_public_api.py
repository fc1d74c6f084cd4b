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
        "import sys, liveupdates, liveupdates.asgi, liveupdates.durable, "
        "liveupdates.integrations, liveupdates.integrations.lifespans; "
        "bad = [m for m in ('starlette', 'redis', 'fastapi', 'pydantic', 'psycopg', "
        "'sqlalchemy', 'django', 'litestar', 'asgiref') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_each_integration_imports_its_own_framework_only() -> None:
    """An app on one framework does not pay for (or need) the others."""
    others = {"fastapi": ("django", "litestar"), "django": ("fastapi", "litestar"),
              "litestar": ("fastapi", "django")}  # fmt: skip
    for integration, foreign in others.items():
        code = (
            "import os, sys; "
            "os.environ['DJANGO_SETTINGS_MODULE'] = 'examples.django_app.settings'; "
            f"import liveupdates.integrations.{integration} as m; "
            "assert isinstance(m.__all__, tuple) and all(hasattr(m, n) for n in m.__all__); "
            f"print(','.join(n for n in {foreign!r} if n in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "", integration
