"""Loading the Lua commands: one file per command, ``--@include`` lines resolved at load.

Scripts are registered once per client and called by SHA; redis-py's Script reloads a script
on NOSCRIPT (for example after a server restart), so callers never handle it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

_INCLUDE = re.compile(r"^--@include\s+(\S+)\s*$", re.MULTILINE)

SCRIPT_NAMES = ("commit", "submit", "promote_delayed", "reschedule", "dead_letter", "replay_dead",
                "checkpoint_read", "checkpoint_ack", "checkpoint_lease", "checkpoint_census", "evict",
                "read_workflow")


def _read(name: str) -> str:
    return resources.files("stabilize_redis").joinpath("lua", name).read_text(encoding="utf-8")


@cache
def script_source(name: str) -> str:
    """The full text of ``lua/<name>.lua`` with its includes inlined."""

    def inline(match: re.Match[str]) -> str:
        return _read(match.group(1))

    return _INCLUDE.sub(inline, _read(f"{name}.lua"))


class Scripts:
    """The engine's Lua commands, registered on one client."""

    def __init__(self, client: redis.Redis) -> None:
        self.commit: Script = client.register_script(script_source("commit"))
        self.submit: Script = client.register_script(script_source("submit"))
        self.promote_delayed: Script = client.register_script(script_source("promote_delayed"))
        self.reschedule: Script = client.register_script(script_source("reschedule"))
        self.dead_letter: Script = client.register_script(script_source("dead_letter"))
        self.replay_dead: Script = client.register_script(script_source("replay_dead"))
        self.checkpoint_read: Script = client.register_script(script_source("checkpoint_read"))
        self.checkpoint_ack: Script = client.register_script(script_source("checkpoint_ack"))
        self.checkpoint_lease: Script = client.register_script(script_source("checkpoint_lease"))
        self.checkpoint_census: Script = client.register_script(script_source("checkpoint_census"))
        self.evict: Script = client.register_script(script_source("evict"))
        self.read_workflow: Script = client.register_script(script_source("read_workflow"))
