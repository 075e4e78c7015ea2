"""Lua scripts spell no field name of their own: keys.py's LUA_NAMES (``K.<name>``) does."""

from __future__ import annotations

import re
from importlib import resources

from stabilize_redis.backend.scripts import SCRIPT_NAMES, script_source
from stabilize_redis.keys import LUA_NAMES

_LUA = resources.files("stabilize_redis").joinpath("lua")


def _code_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.lstrip().startswith("--")]


def test_no_script_spells_a_field_name_as_a_literal() -> None:
    names = set(LUA_NAMES.values())
    offenders = []
    for path in [*_LUA.iterdir(), *_LUA.joinpath("includes").iterdir()]:
        if not path.name.endswith(".lua"):
            continue
        for line in _code_lines(path.read_text(encoding="utf-8")):
            for literal in re.findall(r"'([^']*)'", line):
                if literal in names:
                    offenders.append(f"{path.name}: '{literal}' in {line.strip()}")
    assert offenders == []


def test_every_name_a_script_uses_is_generated_from_keys_py() -> None:
    for name in SCRIPT_NAMES:
        source = script_source(name)
        used = set(re.findall(r"\bK\.(\w+)", "\n".join(_code_lines(source))))
        assert used <= set(LUA_NAMES), (name, used - set(LUA_NAMES))
        assert source.startswith("-- generated from stabilize_redis/keys.py")
