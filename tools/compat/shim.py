"""Import aliases that let stabilize's own tests import this engine.

``install()`` puts one finder first on ``sys.meta_path`` that answers for two families of names:

* ``stabilize`` and ``stabilize.X.Y`` resolve to ``stabilize_redis`` and ``stabilize_redis.X.Y``
  (the very same module objects: ``stabilize.models.stage is stabilize_redis.models.stage``);
* ``tests.conftest`` resolves to ``tools.compat.conftest_plugin``, so a test that does
  ``from tests.conftest import setup_stabilize`` gets our fixtures' helper, never stabilize's
  conftest.

A name whose target module does not exist is not answered here, so importing it fails with
``ModuleNotFoundError: No module named 'stabilize.X'`` exactly as it would without the alias —
the test that needs it fails, which is the point. Nothing in the engine is patched: the real
module is imported by its own name and only bound under the alias in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence

#: alias prefix -> real prefix; a name is aliased when it equals a key or starts with key + ".".
ALIASES: dict[str, str] = {
    "stabilize": "stabilize_redis",
    "tests.conftest": "tools.compat.conftest_plugin",
}


def target_name(fullname: str) -> str | None:
    """The real module name behind ``fullname``, or None when ``fullname`` is not aliased."""
    for alias, real in ALIASES.items():
        if fullname == alias:
            return real
        if fullname.startswith(alias + "."):
            return real + fullname[len(alias):]
    return None


class _AliasLoader(importlib.abc.Loader):
    """Imports the real module by its own name and binds it under the alias.

    ``create_module`` hands the import system a throw-away placeholder; ``exec_module``
    replaces it in ``sys.modules`` with the real module, which the import system then returns
    (it re-reads ``sys.modules`` after ``exec_module``), so the real module's ``__spec__`` and
    ``__name__`` are never rewritten.
    """

    def __init__(self, real: str) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        sys.modules[module.__name__] = importlib.import_module(self.real)


class AliasFinder(importlib.abc.MetaPathFinder):
    """Answers for aliased names whose real module exists; stays silent for everything else."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        real = target_name(fullname)
        if real is None:
            return None
        try:
            real_spec = importlib.util.find_spec(real)
        except ModuleNotFoundError:
            return None
        if real_spec is None:
            return None
        is_package = real_spec.submodule_search_locations is not None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real), is_package=is_package)


_FINDER = AliasFinder()


def install() -> None:
    """Put the alias finder first on ``sys.meta_path`` (idempotent).

    First, so that a ``tests/conftest.py`` on ``sys.path`` (stabilize's own) is never what
    ``tests.conftest`` imports. A ``stabilize`` distribution installed in the same environment
    would be shadowed too; the runner refuses to run when one is importable by path.
    """
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Remove the finder and the aliased entries it bound in ``sys.modules``."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for name in [n for n in sys.modules if target_name(n) is not None]:
        del sys.modules[name]


__all__ = ["ALIASES", "AliasFinder", "install", "target_name", "uninstall"]
