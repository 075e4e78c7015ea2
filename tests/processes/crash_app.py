"""A task app whose worker processes always crash at start-up: building its registry raises
(an error in the user's code, not a bad ``--app``)."""

from __future__ import annotations

from stabilize_redis import TaskRegistry


def registry() -> TaskRegistry:
    raise RuntimeError("this app's registry cannot be built (test of crash loops)")
