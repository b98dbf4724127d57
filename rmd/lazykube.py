"""kubernetes_asyncio's generated classes, imported when first used instead of all at start.

``kubernetes_asyncio.client`` imports every generated API class (69 modules) and model class
(768 modules) as it is imported: 31 MB of the daemon's RSS (memray, high-water mark of
``import rmd.daemon``: 17 MB models, 13 MB APIs), for the few the daemon uses (``CoreV1Api``,
``CoordinationV1Api``, ``V1Pod`` and the models a pod's answer is made of, ...).
:func:`install` makes the three package ``__init__`` modules (``client``, ``client.api``,
``client.models``) bind each ``from kubernetes_asyncio.client... import Name`` of theirs on
first access instead (PEP 562 module ``__getattr__``); every other statement of them runs as
written. ``client.V1Pod``, ``from kubernetes_asyncio.client import V1Pod`` and the library's
own ``getattr(kubernetes_asyncio.client.models, "V1Pod")`` give the same class as before.

Installed by the ``rmd`` command (``rmd/__main__.py``, also ``python -m rmd``) before its CLI
loads: a process's own choice, so importing rmd as a library leaves kubernetes_asyncio as it
is. Installed after kubernetes_asyncio was imported, it changes nothing. An ``__init__``
whose source cannot be read or parsed is imported as usual.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

PACKAGES = frozenset(
    {
        "kubernetes_asyncio.client",
        "kubernetes_asyncio.client.api",
        "kubernetes_asyncio.client.models",
    }
)
_ROOT = "kubernetes_asyncio.client"


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _LazyPackageFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LazyPackageFinder())


def split_imports(source: str) -> tuple[dict[str, str], ast.Module]:
    """The names a package ``__init__`` imports one by one from kubernetes_asyncio.client
    modules (name → module), and the rest of its statements."""
    tree = ast.parse(source)
    lazy: dict[str, str] = {}
    kept: list[ast.stmt] = []
    for statement in tree.body:
        if (
            isinstance(statement, ast.ImportFrom)
            and statement.level == 0
            and statement.module is not None
            and statement.module.startswith(_ROOT)
            and all(alias.asname is None and alias.name != "*" for alias in statement.names)
        ):
            for alias in statement.names:
                lazy[alias.name] = statement.module
        else:
            kept.append(statement)
    return lazy, ast.Module(body=kept, type_ignores=[])


class _LazyPackageLoader(importlib.abc.Loader):
    def __init__(self, original: importlib.machinery.SourceFileLoader) -> None:
        self._original = original

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        try:
            source = self._original.get_source(module.__name__)
            if source is None:
                raise ImportError(f"no source for {module.__name__}")
            lazy, rest = split_imports(source)
        except (ImportError, OSError, SyntaxError):
            self._original.exec_module(module)  # as usual
            return
        exec(compile(rest, module.__file__ or module.__name__, "exec"), module.__dict__)
        vars(module)["__getattr__"] = _attribute_getter(module, lazy)
        vars(module)["__dir__"] = lambda: sorted({*vars(module), *lazy})


def _attribute_getter(module: ModuleType, lazy: dict[str, str]) -> Any:
    def __getattr__(name: str) -> Any:
        where = lazy.get(name)
        if where is None:
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where), name)
        setattr(module, name, value)  # found directly from now on
        return value

    return __getattr__


class _LazyPackageFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in PACKAGES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _LazyPackageLoader(spec.loader)
        return spec
