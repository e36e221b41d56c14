"""The package's layering, checked on the source: the two halves never reach into each other.

mqfs/server/ is the daemon, mqfs/client/ what programs link, mqfs/cli/ the command on top of
the client, and errors, wire, posix, mounts and fastq (the fast path's queue core, which both
halves run) the shared leaves both halves speak. A client
that imported the server would drag trio's daemon side and pyfuse3 into every program; a
server that imported the client would let the daemon depend on its own callers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGE = ROOT / "mqfs"
LEAVES = {"mqfs.errors", "mqfs.wire", "mqfs.posix", "mqfs.mounts", "mqfs.fastq"}
# What each part may import from mqfs (besides itself): anything not listed is forbidden.
ALLOWED = {
    "mqfs.server": LEAVES,
    "mqfs.client": LEAVES,
    "mqfs.cli": LEAVES | {"mqfs.client", "mqfs.server"},  # `mqfs mount` runs the server
    "leaf": LEAVES,
}


def _part(module: str) -> str:
    """mqfs.server.queue -> mqfs.server; mqfs.posix.MQ_PRIO_MAX -> mqfs.posix."""
    return ".".join(module.split(".")[:2])


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every mqfs module *path* imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    # `from mqfs import __version__` takes an attribute of the package root, not a layer.
    found = {name for name in found if not name.rsplit(".", 1)[-1].startswith("__")}
    return {name for name in found if name == "mqfs" or name.startswith("mqfs.")}


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_layer_reaches_into_another(path: Path) -> None:
    module = _module_name(path)
    if module in {"mqfs", "mqfs.__main__"}:
        return  # the package's front door re-exports the client API and starts the CLI
    own = _part(module)
    allowed = ALLOWED.get(own, ALLOWED["leaf"]) | {own}
    # `from mqfs import errors` is seen as mqfs.errors: a leaf like any other.
    bad = {name for name in _imports(path) if name != "mqfs" and _part(name) not in allowed}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_rule_sees_a_violation(tmp_path: Path) -> None:
    """The scan finds an import made inside a function, as the real check must."""
    source = tmp_path / "sample.py"
    source.write_text("def f():\n    from mqfs.server import queue\n")
    assert "mqfs.server.queue" in _imports(source)
    assert _part("mqfs.server.queue") not in ALLOWED["mqfs.client"]
