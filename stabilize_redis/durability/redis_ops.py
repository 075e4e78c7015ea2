"""Pipelines of Lua calls in exactly one round trip.

redis-py's ``Script`` objects, when called on a pipeline, send ``SCRIPT EXISTS`` before every
``execute`` (a second round trip). The checkpointer batches many script calls per round trip,
so it calls ``EVALSHA`` directly and, only if Redis answers NOSCRIPT (it restarted and lost its
script cache), loads the scripts and runs the pipeline once more. Every caller's pipeline must
therefore be safe to run twice: the checkpointer's scripts are all idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.commands.core import Script
from redis.exceptions import NoScriptError

from stabilize_redis.backend.batch import pipeline


def evalsha(pipe: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue one call of ``script`` on ``pipe`` (no existence check)."""
    pipe.evalsha(script.sha, len(keys), *keys, *args)


def execute(client: Any, build: Callable[[Any], None], scripts: Sequence[Script]) -> list[Any]:
    """Build a non-transactional pipeline with ``build(pipe)`` and run it: one round trip, or
    two plus a ``SCRIPT LOAD`` per script when Redis lacks a script. Raises the first error any
    command returned."""
    for attempt in range(2):
        pipe = pipeline(client)
        build(pipe)
        results: list[Any] = pipe.execute(raise_on_error=False)
        if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
            for script in scripts:
                client.script_load(script.script)
            continue
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results
    raise AssertionError("unreachable")
