"""``stabilize-redis``: worker, demo and operator commands (one module each in
``workers/commands``). Every command that touches Redis takes ``--url`` and ``--namespace``
(defaults from STABILIZE_REDIS_URL / STABILIZE_NAMESPACE; no URL = the embedded default)."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from workers.commands import COMMANDS


def _modules() -> dict[str, ModuleType]:
    """Command name (the module's ``NAME``: ``add-instance`` lives in ``add_instance``) -> module."""
    modules = [importlib.import_module(f"workers.commands.{name}") for name in COMMANDS]
    return {module.NAME: module for module in modules}


def build_parser(modules: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    modules = modules or _modules()
    parser = argparse.ArgumentParser(prog="stabilize-redis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in modules.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.__doc__))
    return parser


def main(argv: list[str] | None = None) -> int:
    modules = _modules()
    args = build_parser(modules).parse_args(argv)
    return int(modules[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main())
