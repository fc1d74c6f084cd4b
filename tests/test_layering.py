"""The import layering of the package, as docs/architecture.md draws it.

    core  <-  pipeline  <-  hub / session / producers  <-  adapters
       ^         |
       +--- backplanes (beside the pipeline: they know the core only)

A module may import its own layer and the layers it stands on, never one above: the core
knows nothing of how events travel, the pipeline nothing of the hub or of ASGI, and the
adapters reach the pipeline only through the session layer. Every module of the package must
be in a layer (a new one is placed here on purpose).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import liveupdates

PACKAGE = Path(liveupdates.__file__).parent
CORE = {"auth", "errors", "events", "limits", "metrics", "positions", "protocol", "targets",
        "throttle"}  # fmt: skip
APP = {"hub", "session", "transaction", "producer", "sync_producer", "publish_json"}
LAYERS = ("core", "backplanes", "pipeline", "app", "adapters", "testing")
ALLOWED = {
    "core": {"core"},
    "backplanes": {"core", "backplanes"},
    "pipeline": {"core", "backplanes", "pipeline"},
    "app": {"core", "backplanes", "pipeline", "app"},
    "adapters": {"core", "backplanes", "app", "adapters"},
    "testing": set(LAYERS),
}


def layer_of(module: str) -> str | None:
    """The layer of a module of the package (its dotted name below ``liveupdates``)."""
    parts = module.split(".")
    top = parts[0]
    if top in CORE:
        return "core"
    if top in APP or top == "durable":
        return "app"  # the hub, the session layer and the producers beside the hub
    if top == "_pipeline":
        return "pipeline"
    if top == "backplanes":
        return "backplanes"
    if top in ("asgi", "prometheus", "cli", "__main__", "integrations"):
        return "adapters"
    if top == "testing":
        return "testing"
    return None


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path) -> set[str]:
    """The package's modules that `module` imports (relative or absolute, any depth)."""
    is_package = path.name == "__init__.py"
    anchor = "liveupdates." + module if is_package else "liveupdates." + module.rpartition(".")[0]
    anchor = anchor.rstrip(".")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), anchor)
            else:
                base = node.module or ""
            targets = [base] + [base + "." + alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("liveupdates."):
                names.add(target.removeprefix("liveupdates."))
    known = modules()
    return {name for name in names if name in known}


def test_every_module_has_a_layer() -> None:
    assert [m for m in modules() if layer_of(m) is None] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    breaches = []
    for module, path in sorted(modules().items()):
        layer = layer_of(module)
        assert layer is not None
        for imported in sorted(imports_of(module, path)):
            other = layer_of(imported)
            if other is not None and other not in ALLOWED[layer]:
                breaches.append(f"{module} ({layer}) imports {imported} ({other})")
    assert breaches == []


def test_the_check_sees_relative_imports() -> None:
    """A test that cannot fail is a defect: the walker finds what a module really imports."""
    found = imports_of("asgi.websocket", PACKAGE / "asgi" / "websocket.py")
    assert {"session", "hub", "protocol", "asgi._asgi"} <= found
    assert "_pipeline.streams" in imports_of("session", PACKAGE / "session.py")
