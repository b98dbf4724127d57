"""Imports point inward: the allocation core is pure (no I/O libraries, no asyncio, nothing
from the edges), so it can be reasoned about and tested without a loop or a server."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "rmd" / "core"
FORBIDDEN = {"asyncio", "aiohttp", "kubernetes_asyncio", "socket", "subprocess", "structlog"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_core_imports_only_the_standard_library_and_itself() -> None:
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for module in sorted(imports_of(path)):
            top = module.split(".")[0]
            own = module == "rmd.core" or module.startswith("rmd.core.")
            stdlib = top in sys.stdlib_module_names or top == "__future__"
            if top in FORBIDDEN or not (own or stdlib):
                offenders.append(f"{path.name} imports {module}")
    assert offenders == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import asyncio\nfrom rmd.kube.pods import PodGateway\n")
    assert imports_of(module) == {"asyncio", "rmd.kube.pods"}
