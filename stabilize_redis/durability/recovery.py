"""Finding RUNNING workflows whose next message was lost, and continuing them.

With Redis AOF ``appendfsync everysec`` a crash of the machine can lose about the last second
of writes: a workflow's state may survive while the message that would move it on does not (or
an operator deleted a message). Such a workflow is RUNNING forever with nothing to wake it.

``find_stalled`` finds them without ever doubling work that is still under way. A workflow is
stalled only when all of these hold:

* it is RUNNING and nothing happened to it for ``older_than_s`` (newest of its last event and
  its submit time, by the Redis clock);
* no message anywhere references it: not in the ready stream (which still holds every entry a
  worker is handling, until its commit acks it, so in-flight work counts), not delayed, not in
  the outbox, and not dead-lettered (dead letters are the operator's to replay; an
  ``unknown_target`` letter names a stage or task the workflow does not have, so it does not
  count). The streams and the delayed set are read twice in opposite orders, so a message
  moving between them (promoted or rescheduled) while they are read is still seen;
* its version did not move between the scan and the push: ``lua/recover_workflow.lua``
  enqueues the planned messages only if ``ver`` is unchanged and this version was not just
  recovered by another sweep (a guard key with a TTL).

Then it gets ``recovery_plan.recovery_messages``. Because in-flight work is never touched, a
task still executing is never run a second time by a sweep.

``StallSweeper`` runs ``find_stalled`` periodically in worker processes (default every 30 s),
one worker at a time: each run takes a lease (SET NX PX) that also spaces runs across workers.
``QueueProcessor(recover_on_start=True)`` runs ``stabilize_redis.recovery.WorkflowRecovery``
(built on this sweep) when it starts.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.commands.core import Script

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.config import env_float
from stabilize_redis.durability.recovery_plan import describe, plan_from_hash
from stabilize_redis.keys import (
    CHECKPOINT_EVENT_FIELD,
    DEAD_REASON_FIELD,
    ENTRY_PAYLOAD_BYTES,
    STATUS_FIELD,
    WORKFLOW_VERSION_FIELD,
    PartitionKeys,
)
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.periodic import PeriodicThread
from stabilize_redis.queue.messages import new_message_id

log = logging.getLogger("stabilize_redis.recovery")

INTERVAL_ENV = "STABILIZE_RECOVERY_INTERVAL"
AGE_ENV = "STABILIZE_RECOVERY_AGE"
DEFAULT_INTERVAL_S = 30.0
DEFAULT_AGE_S = 30.0
_RUNNING = WorkflowStatus.RUNNING.name.encode()
_PAGE = 1000


@dataclass
class StallReport:
    """One sweep: ``running`` RUNNING workflows seen, ``quiet`` of them unchanged long enough,
    ``stalled`` those with no message anywhere, ``recovered`` the ids messages were pushed for
    (``messages`` in all), ``skipped`` stalled ones left alone (changed meanwhile, just
    recovered elsewhere, or nothing to do)."""

    running: int = 0
    quiet: int = 0
    stalled: int = 0
    recovered: list[str] = field(default_factory=list)
    messages: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"running": self.running, "quiet": self.quiet, "stalled": self.stalled,
                "recovered": len(self.recovered), "messages": self.messages, "skipped": self.skipped}


def _server_ms(client: Any) -> int:
    secs, micros = client.time()
    return int(secs) * 1000 + int(micros) // 1000


def _stream_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def _payload_workflow(payload: bytes | None) -> str | None:
    if not payload:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    wid = data.get("execution_id") if isinstance(data, dict) else None
    return wid if isinstance(wid, str) else None


class _Refs:
    """Reads which workflows of a partition some message references."""

    def __init__(self, client: Any, part: PartitionKeys, page: int = 1000) -> None:
        self.client = client
        self.part = part
        self.page = page

    def _stream(self, key: str) -> set[str]:
        found: set[str] = set()
        start = "-"
        while True:
            entries = self.client.xrange(key, start, "+", count=self.page)
            for _, fields in entries:
                if fields.get(DEAD_REASON_FIELD.encode()) == b"unknown_target":  # names nothing of its workflow
                    continue
                wid = _payload_workflow(fields.get(ENTRY_PAYLOAD_BYTES))
                if wid:
                    found.add(wid)
            if len(entries) < self.page:
                return found
            start = "(" + entries[-1][0].decode()

    def streams(self) -> set[str]:
        return self._stream(self.part.ready) | self._stream(self.part.outbox)

    def delayed(self) -> set[str]:
        found: set[str] = set()
        for _, payload in self.client.hscan_iter(self.part.delayed_payloads, count=self.page):
            wid = _payload_workflow(payload)
            if wid:
                found.add(wid)
        return found

    def dead(self) -> set[str]:
        return self._stream(self.part.dead)


def _quiet_running(backend: RedisBackend, part: PartitionKeys, now_ms: int,
                   older_than_ms: int) -> tuple[int, dict[str, int]]:
    """(RUNNING count, {id: ver} of RUNNING workflows quiet for at least ``older_than_ms``)."""
    client = backend.client
    running: list[tuple[str, int, int]] = []  # id, last known activity (ms), version
    start = 0
    while True:  # the partition index in pages, so a large index never makes one huge reply
        members = client.zrange(part.workflows, start, start + _PAGE - 1, withscores=True)
        if not members:
            break
        pipe = pipeline(client)
        for member, _ in members:
            pipe.hmget(part.workflow(member.decode()), [STATUS_FIELD, WORKFLOW_VERSION_FIELD, CHECKPOINT_EVENT_FIELD])
        for (member, score), (st, ver, archived) in zip(members, pipe.execute(), strict=True):
            if st == _RUNNING:
                # The checkpointer trims archived events from the stream: the newest archived
                # one's time is its id's, kept in the hash.
                running.append((member.decode(), max(int(score), _stream_ms(archived) if archived else 0),
                                int(ver or 0)))
        if len(members) < _PAGE:
            break
        start += _PAGE
    if not running:
        return 0, {}
    pipe = pipeline(client)
    for wid, _, _ in running:
        pipe.xrevrange(part.events(wid), "+", "-", count=1)
    quiet: dict[str, int] = {}
    for (wid, submitted, ver), newest in zip(running, pipe.execute(), strict=True):
        last = max(submitted, _stream_ms(newest[0][0]) if newest else 0)
        if now_ms - last >= older_than_ms:
            quiet[wid] = ver
    return len(running), quiet


def _unreferenced(client: Any, part: PartitionKeys, candidates: dict[str, int]) -> dict[str, int]:
    """The candidates no message of the partition references (two passes; see the module doc)."""
    refs = _Refs(client, part)
    left = dict(candidates)
    for reader in (refs.dead, refs.streams, refs.delayed, refs.delayed, refs.streams):
        if not left:
            break
        for wid in reader():
            left.pop(wid, None)
    return left


def find_stalled(backend: RedisBackend, older_than_s: float = DEFAULT_AGE_S, *, push: bool = True,
                 partitions: Iterable[int] | None = None, guard_ttl_s: float | None = None) -> StallReport:
    """Find RUNNING workflows with no message anywhere that have been quiet for ``older_than_s``
    seconds and (with ``push``) enqueue the messages their state needs. Returns what it saw and
    did. ``guard_ttl_s`` (default: twice the age, at least 60 s) is how long a recovered version
    is protected from a second recovery."""
    client = backend.client
    script: Script = backend.scripts.recover_workflow
    ttl_ms = int((guard_ttl_s if guard_ttl_s is not None else max(60.0, 2 * older_than_s)) * 1000)
    now_ms = _server_ms(client)
    report = StallReport()
    parts: Sequence[PartitionKeys] = ([backend.keys.partition(i) for i in partitions] if partitions is not None
                                      else backend.keys.all_partitions())
    for part in parts:
        running, quiet = _quiet_running(backend, part, now_ms, int(older_than_s * 1000))
        report.running += running
        report.quiet += len(quiet)
        if not quiet:
            continue
        stalled = _unreferenced(client, part, quiet)
        report.stalled += len(stalled)
        for wid, ver in stalled.items():
            _recover_one(backend, script, part, wid, ver, ttl_ms, push, report)
    if report.stalled:
        log.warning("stalled-workflow sweep: %s", report.to_dict())
    return report


def _recover_one(backend: RedisBackend, script: Script, part: PartitionKeys, wid: str, ver: int,
                 ttl_ms: int, push: bool, report: StallReport) -> None:
    messages = plan_from_hash(backend.client.hgetall(part.workflow(wid)))
    if not messages or not push:
        report.skipped += 1
        return
    args: list[Any] = [ver, ttl_ms]
    for m in messages:
        m.message_id = new_message_id()
        args += [m.message_id, m.encode()]
    code = int(script(keys=[part.workflow(wid), part.ready, part.delayed, part.delayed_payloads,
                            part.recovered(wid)], args=args)[0])
    if code == 1:
        report.recovered.append(wid)
        report.messages += len(messages)
        log.warning("workflow %s was RUNNING with no message at version %d: pushed %s", wid, ver,
                    ", ".join(describe(messages)))
    else:
        report.skipped += 1



class StallSweeper(PeriodicThread):
    """Runs ``find_stalled`` every ``interval`` seconds on a daemon thread, in at most one
    process of the namespace per interval (a lease key taken with SET NX PX and left to
    expire). ``interval`` <= 0 disables it. Errors are logged and the sweep tried again later."""

    thread_name = "stz-stall-sweeper"

    def __init__(self, backend: RedisBackend, interval: float | None = None,
                 older_than_s: float | None = None, owner: str | None = None) -> None:
        super().__init__(interval if interval is not None else env_float(INTERVAL_ENV, DEFAULT_INTERVAL_S))
        self.backend = backend
        self.older_than_s = older_than_s if older_than_s is not None else env_float(AGE_ENV, DEFAULT_AGE_S)
        self.owner = owner or f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.last: StallReport | None = None

    def run_once(self) -> StallReport | None:
        """Take the lease and sweep; None when another process swept within the interval."""
        lease_ms = max(1, int(self.interval * 1000 * 0.9))
        if not self.backend.client.set(self.backend.keys.recovery_lease, self.owner, nx=True, px=lease_ms):
            return None
        self.last = find_stalled(self.backend, self.older_than_s)
        return self.last

    def tick(self) -> bool:
        self.run_once()  # an error: reported by PeriodicThread (once per state change), tried next interval
        return False
