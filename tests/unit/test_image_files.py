"""The production image holds only the product: no development tool, no test support.

The file set is what ``docker/Dockerfile`` copies (its ``COPY`` sources, directories
expanded), so the check follows the Dockerfile as it changes.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_PACKAGES = ("rmd_dev", "tests", "bench")


def copied_sources(dockerfile: Path) -> list[Path]:
    """Every repository file a ``COPY`` line of the Dockerfile brings into the image."""
    files: list[Path] = []
    for line in dockerfile.read_text().splitlines():
        if not line.upper().startswith("COPY "):
            continue
        words = shlex.split(line, comments=True)
        sources = [w for w in words[1:-1] if not w.startswith("--")]
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"Dockerfile copies {source}, which does not exist"
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            )
    return files


def imported_modules_outside_guards(source: str) -> list[str]:
    """Modules a file imports, except imports inside ``try: ... except ImportError``."""
    tree = ast.parse(source)
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            for inner in node.body:
                guarded.update(id(n) for n in ast.walk(inner))
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_the_image_copies_the_product_package_and_its_entrypoint() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in copied_sources(ROOT / "docker/Dockerfile")}
    assert "rmd/daemon.py" in files
    assert "entrypoint/rmd-entrypoint.sh" in files


def test_the_image_holds_no_development_module() -> None:
    files = [p.relative_to(ROOT) for p in copied_sources(ROOT / "docker/Dockerfile")]
    dev_files = [f.as_posix() for f in files if f.parts[0] in DEV_PACKAGES]
    assert dev_files == []
    stray = [f.as_posix() for f in files if f.suffix == ".py" and f.parts[0] != "rmd"]
    assert stray == []


def test_no_product_module_needs_a_development_module() -> None:
    offenders = []
    for path in copied_sources(ROOT / "docker/Dockerfile"):
        if path.suffix != ".py":
            continue
        for module in imported_modules_outside_guards(path.read_text()):
            if module.split(".")[0] in DEV_PACKAGES:
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def test_the_import_check_sees_an_unguarded_import() -> None:
    source = (
        "import os\n"
        "from rmd_dev.cli import main\n"
        "try:\n    import rmd_dev.demo\nexcept ImportError:\n    pass\n"
    )
    assert imported_modules_outside_guards(source) == ["os", "rmd_dev.cli"]
