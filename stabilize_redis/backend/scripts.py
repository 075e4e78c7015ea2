"""Loading the Lua commands: one file per command, ``--@include`` lines resolved at load, and
every script preceded by ``keys.lua_names()`` (``local K = {...}``): scripts spell the fields
they touch as ``K.<name>``, never as literals, so keys.py stays the one place names are spelt.

Scripts are registered once per client and called by SHA; redis-py's Script reloads a script
on NOSCRIPT (for example after a server restart), so callers never handle it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

from stabilize_redis.backend.batch import remember
from stabilize_redis.keys import lua_names

_INCLUDE = re.compile(r"^--@include\s+(\S+)\s*$", re.MULTILINE)

SCRIPT_NAMES = ("commit", "submit", "promote_delayed", "reschedule", "dead_letter", "replay_dead",
                "checkpoint_read", "checkpoint_ack", "checkpoint_lease", "checkpoint_census", "evict",
                "read_workflow", "read_region", "delete_consumers", "recover_workflow", "dirty_trim",
                "dirty_remark", "reconcile_workflow", "restore_workflow", "hand_back", "relay_deliver")
"""Every Lua command called through ``Scripts``. ``checkpoint_life`` is the one exception: each
partition life registers its own copy with a unique suffix (``durability.epochs``: the script
cache is what tells one life of Redis from the next)."""


def _read(name: str) -> str:
    return resources.files("stabilize_redis").joinpath("lua", name).read_text(encoding="utf-8")


@cache
def script_source(name: str) -> str:
    """The full text of ``lua/<name>.lua``: ``keys.lua_names()``, then the file with its
    includes inlined."""

    def inline(match: re.Match[str]) -> str:
        return _read(match.group(1))

    return lua_names() + _INCLUDE.sub(inline, _read(f"{name}.lua"))


class Scripts:
    """The engine's Lua commands (``SCRIPT_NAMES``) on one client, each registered on first use:
    ``Scripts(client).commit(keys=..., args=...)``. The one registry of Lua calls."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._loaded: dict[str, Script] = {}

    def __getattr__(self, name: str) -> Script:
        if name not in SCRIPT_NAMES:
            raise AttributeError(f"no Lua command {name!r} (lua/{name}.lua is not in SCRIPT_NAMES)")
        script = self._loaded.get(name)
        if script is None:
            script = remember(self._client.register_script(script_source(name)))
            self._loaded[name] = script
        return script
