"""Loading the user's task registry from ``MODULE:ATTR``."""

from __future__ import annotations

import importlib
import os
import sys

from stabilize_redis.tasks.registry import TaskRegistry


class AppLoadError(Exception):
    """``--app`` does not name a TaskRegistry (or a callable returning one)."""


def load_registry(spec: str) -> TaskRegistry:
    """Import ``MODULE:ATTR`` (the current directory is importable); ATTR is a TaskRegistry or a
    callable returning one."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppLoadError(f"--app must look like MODULE:ATTR, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise AppLoadError(f"cannot import {module_name!r}: {e}") from e
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(value, TaskRegistry) and callable(value):
        value = value()
    if not isinstance(value, TaskRegistry):
        raise AppLoadError(f"{spec} is a {type(value).__name__}, not a TaskRegistry")
    return value
