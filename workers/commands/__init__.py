"""Subcommands of ``stabilize-redis``: one module each, exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. List a new module in ``COMMANDS``."""

from __future__ import annotations

import argparse

COMMANDS = ("worker", "demo", "status", "dlq")


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    """``--url``/``--namespace`` for every command that touches Redis."""
    p.add_argument("--url", default=None, help="Redis URL (redis://, rediss://, unix://); env STABILIZE_REDIS_URL")
    p.add_argument("--namespace", default=None, help="key prefix; env STABILIZE_NAMESPACE (default stz)")
