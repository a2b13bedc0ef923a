"""``protocol/`` stays pure: no I/O library, no daemon code, no clock reads in its imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import protocol

FORBIDDEN = ("trio", "libp2p", "plyvel", "prometheus_client", "fastapi", "h11", "node")
PROTOCOL_DIR = Path(protocol.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_protocol_sources_import_no_io_library() -> None:
    offenders = {
        str(p.relative_to(PROTOCOL_DIR)): sorted(_imports(p) & set(FORBIDDEN))
        for p in PROTOCOL_DIR.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_all_of_protocol_loads_no_io_library() -> None:
    modules = sorted(
        "protocol." + ".".join(p.relative_to(PROTOCOL_DIR).with_suffix("").parts)
        for p in PROTOCOL_DIR.rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "", f"protocol pulled in: {out.stdout.strip()}"
