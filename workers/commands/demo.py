"""``stabilize-redis demo``: the demo workflow (embedded unless STABILIZE_REDIS_URL is set)."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run the demo workflow (embedded unless STABILIZE_REDIS_URL is set)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No arguments: configuration comes from the environment."""


def run(args: argparse.Namespace) -> int:
    from stabilize_redis.demo import main

    return main()
