"""``lua/commit.lua`` in Python, over one in-memory workflow hash.

The kit backend hands ``apply_plan`` exactly what ``RedisBackend.commit`` hands the script - the
JSON plan and the blobs of ``Transition.to_script_args`` - so the kit and Redis interpret the
same wire format. The steps and their order are the script's: dedup -> checks -> writes ->
deletes -> resets -> unsettles -> counters -> settles (with the cascade) -> completion ->
enqueue -> events -> notifications -> ``ver`` bump -> dedup record. Pure data; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

Hash = dict[str, bytes]
"""A workflow hash: field name -> value, as Redis stores it (plain integers as ASCII)."""


def as_int(value: bytes | None, default: int | None = 0) -> int | None:
    """A plain integer field the way Lua's ``tonumber(HGET(...) or default)`` reads it: a
    missing field is ``default``, a value that is not a number is None."""
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return None


def incr(h: Hash, name: str, by: int) -> int:
    """HINCRBY: add ``by`` to the integer in ``name`` (missing: 0) and return the new value."""
    value = (as_int(h.get(name)) or 0) + by
    h[name] = b"%d" % value
    return value


@dataclass
class Applied:
    """What one plan did: ``code`` 1 (committed), 0 (DUPLICATE) or -1 (CONFLICT on ``field``);
    for a commit, the messages enqueued in enqueue order as (message id, payload, delay ms,
    released by a counter or the completion) and the event/notice texts."""

    code: int
    conflict_field: str = ""
    enqueued: list[tuple[str, bytes, int, bool]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    notices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def released(self) -> int:
        return sum(1 for *_, rel in self.enqueued if rel)


def _blob(argv: list[Any], index: int) -> bytes:
    value = argv[index - 1]  # Lua's ARGV is 1-based
    return value if isinstance(value, bytes) else str(value).encode()


def apply_plan(h: Hash, done: set[str], argv: list[Any]) -> Applied:
    """Apply one commit plan (``argv`` = ``Transition.to_script_args(...)``) to ``h``, with
    ``done`` as the dedup record; returns what ``lua/commit.lua`` would have done. ``h`` and
    ``done`` change only when the plan commits (code 1)."""
    plan = json.loads(argv[0])
    if plan["m"] and plan["m"] in done:
        return Applied(0)
    for name, version in plan["c"]:
        if as_int(h.get(f"v:{name}")) != int(version):
            return Applied(-1, name)
    for name, value in plan["cv"]:
        if as_int(h.get(name)) != int(value):
            return Applied(-1, name)
    out = Applied(1)

    def release(index: int) -> None:
        msg_id, ref, delay = plan["r"][index - 1]
        out.enqueued.append((msg_id, _blob(argv, ref), int(delay), True))

    for name, ref in plan["w"]:
        h[name] = _blob(argv, ref)
        incr(h, f"v:{name}", 1)
    for name in plan["x"]:
        h.pop(name, None)
        h.pop(f"v:{name}", None)
    for name, rank, ref in plan.get("o") or []:  # publications: replace the line of `rank`
        lines = [line for line in (h.get(name) or b"").decode().split("\n")
                 if line and not line.startswith(f"{rank}\t")]
        text = "".join(f"{line}\n" for line in lines) + (_blob(argv, ref).decode() if ref else "")
        if text:
            h[name] = text.encode()
        else:
            h.pop(name, None)
    resets = plan.get("z") or []
    for name, value in resets:
        h[name] = str(value).encode()
    k: dict[str, str] = plan.get("k") or {}
    sr = int(plan.get("sr") or 0)
    unsettles = plan.get("u") or []
    for sid in unsettles:
        flag = h.pop(k["flag"] + sid, None)
        if flag is not None:
            incr(h, k["settled"], -1)
            if flag == b"h":
                incr(h, k["halted"], -1)
            h.pop(k["done"], None)
    for name, threshold, by, index in plan["n"]:
        value = incr(h, name, int(by))
        if index > 0 and value == as_int(h.get(threshold), -1):
            release(index)

    def complete() -> None:
        if k["done"] not in h:
            h[k["done"]] = b"1"
            if sr > 0:
                release(sr)

    def mark(sid: str, halted: bool) -> bool:
        if k["flag"] + sid in h:
            return False
        h[k["flag"] + sid] = b"h" if halted else b"1"
        count = incr(h, k["settled"], 1)
        if halted:
            incr(h, k["halted"], 1)
        if count == as_int(h.get(k["settled_t"]), -1):
            complete()
        return True

    def cascade(start: str) -> None:
        queue = [start]
        for sid in queue:  # grows while it is walked: breadth first, as the script does
            for did in (h.get(k["down"] + sid) or b"").decode().split():
                dead = incr(h, k["dead"] + did, 1)
                if dead == as_int(h.get(k["dead_t"] + did), -1) and mark(did, True):
                    queue.append(did)

    if (resets or unsettles) and k and sr > 0 \
            and as_int(h.get(k["settled"])) == as_int(h.get(k["settled_t"]), -1):
        complete()
    settles = plan.get("s") or []
    for sid, halted in settles:
        if mark(sid, halted == 1) and halted == 1:
            cascade(sid)
    if plan.get("cw") == 1:
        complete()
    for msg_id, ref, delay in plan["q"]:
        out.enqueued.append((msg_id, _blob(argv, ref), int(delay), False))
    out.events = [json.loads(_blob(argv, ref)) for ref in plan["ev"]]
    out.notices = [(channel, text) for channel, text in plan["p"]]
    if plan["w"] or plan["n"] or plan["x"] or resets or unsettles or settles or plan.get("cw") == 1:
        incr(h, "ver", 1)
    if plan["m"]:
        done.add(plan["m"])
    return out
