"""A Keiko-style handler test kit: given a workflow hash, when a message, then this plan.

``KitBackend`` stands in for ``RedisBackend`` as far as handlers reach it (``read``, ``commit``,
``stage_ids``, ``part``, ``keys``, ``dead_letter``, ``client.exists``). It holds workflow hashes
as dicts laid out by ``decisions.layout.lay_out`` (and stored as ``lua/submit.lua`` stores them:
every field at version 1, ``ver`` 1), reads them with the contents ``RedisBackend.read`` returns
(both its HMGET and its scripted form), and commits a ``Transition`` by handing the very
arguments ``RedisBackend.commit`` sends to ``lua/commit.lua`` to its Python twin
(``memory_commit.apply_plan``). Every commit attempt is recorded as a ``Plan``.

``Kit`` runs the real handlers (``handlers.default_handlers``) over it::

    kit = given_workflow(wf)                  # given
    kit.handle(StartStage(...))               # when
    assert kit.last_plan.sent() == [("RunTask", "a")]   # then: the plan
    assert kit.status("a") == "RUNNING"       # ... and the state

Delays are virtual: ``step``/``run_until_quiet`` take queued messages in order of due time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from stabilize_redis.backend.redis_backend import CommitOutcome, Delivery, RedisBackend
from stabilize_redis.config import EngineConfig
from stabilize_redis.decisions.codec import StageRecord, decode_stage, encode_stage, meta_from_dict, unpack
from stabilize_redis.decisions.layout import lay_out, workflow_from_hash
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.decisions.transition import Transition
from stabilize_redis.handlers import Handler, HandlerContext, default_handlers
from stabilize_redis.keys import (
    COMPLETION_FIELD,
    CONSUMER_GROUP,
    META_FIELD,
    STAGE_IDS_FIELD,
    NamespaceKeys,
    PartitionKeys,
    counter_field,
    join_counter,
    stage_field,
    threshold_field,
    version_field,
)
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.workflow import Workflow
from stabilize_redis.queue.messages import Message, decode_message, new_message_id
from stabilize_redis.tasks.registry import TaskRegistry
from tests.kit.memory_commit import Applied, Hash, apply_plan, as_int

COUNTER_PREFIXES = ("c:", "t:", "z:")
"""Hash fields that are counters, their thresholds and the settled flags."""


def counter_state(h: Hash) -> dict[str, bytes]:
    """The counter, threshold, settled-flag and completion-flag fields of a hash."""
    return {k: v for k, v in h.items() if k.startswith(COUNTER_PREFIXES) or k == COMPLETION_FIELD}


@dataclass
class Queued:
    """A message the kit's queue holds: due at ``due`` (virtual seconds), ``released`` when a
    counter or the completion flag released it rather than a push of the plan."""

    message: Message
    delay: float
    due: float
    released: bool = False


@dataclass
class Plan:
    """One commit attempt: the Transition a handler decided and what applying it did.

    ``refs`` maps stage ids to ref ids so assertions can name stages by ref id."""

    message: Message | None
    transition: Transition
    outcome: str
    conflict_field: str
    stages: dict[str, StageRecord]
    """Stage id -> the record written, as encoded at commit."""
    meta: Workflow | None
    """The workflow meta written, or None."""
    enqueued: list[Queued]
    """What the commit enqueued, in enqueue order (empty unless it committed)."""
    events: list[dict[str, Any]]
    refs: dict[str, str] = field(default_factory=dict)

    def _ref(self, stage_id: str) -> str:
        return self.refs.get(stage_id, stage_id)

    def _named(self, name: str) -> str:
        prefix, _, rest = name.partition(":")
        return f"{prefix}:{self._ref(rest)}" if rest else name

    @property
    def committed(self) -> bool:
        return self.outcome == CommitOutcome.OK

    def written(self) -> dict[str, str]:
        """Ref id -> status name of every stage the plan writes."""
        return {rec.stage.ref_id: rec.stage.status.name for rec in self.stages.values()}

    def stage(self, ref_id: str) -> StageExecution:
        """The stage ``ref_id`` as the plan writes it (KeyError when it writes no such stage)."""
        for rec in self.stages.values():
            if rec.stage.ref_id == ref_id:
                return rec.stage
        raise KeyError(f"the plan writes no stage {ref_id!r}; it writes {sorted(self.written())}")

    def sent(self) -> list[tuple[str, str]]:
        """(type, stage ref id or '') of the messages the plan pushes, in order (releases by
        counters and completion are in ``released``)."""
        return [(type(m).__name__, self._ref(getattr(m, "stage_id", ""))) for m, _ in self.transition.messages]

    def delays(self) -> list[float]:
        """Delays (seconds) of the pushed messages, in order."""
        return [d for _, d in self.transition.messages]

    def released(self) -> list[tuple[str, str]]:
        """(type, stage ref id or '') of what the commit's counters and completion released."""
        return [(type(q.message).__name__, self._ref(getattr(q.message, "stage_id", "")))
                for q in self.enqueued if q.released]

    def counted(self) -> dict[str, int]:
        """Counter name (stage ids as ref ids, e.g. 'j:b') -> total increment in the plan."""
        out: dict[str, int] = {}
        for op in self.transition.counters:
            name = self._named(op.field.removeprefix("c:"))
            out[name] = out.get(name, 0) + op.incr
        return out

    def settles(self) -> dict[str, bool]:
        """Ref id -> halted, for every top-level stage the plan settles."""
        return {self._ref(sid): halted for sid, halted in self.transition.settles.items()}

    def event_types(self) -> list[str]:
        return [e["event_type"] for e in self.transition.events]

    def checked(self) -> set[str]:
        """Read-set fields (stage fields as 's:<ref>'; counters as 'c:j:<ref>')."""
        names = {self._named(f) for f in self.transition.checks}
        names |= {"c:" + self._named(f.removeprefix("c:")) for f in self.transition.counter_checks}
        return names

    @property
    def acks_only(self) -> bool:
        """The plan changes nothing: no writes, deletes, counters, settles, completion,
        messages or events (the message is only acked)."""
        t = self.transition
        return not (t.writes or t.deletes or t.resets or t.unsettled or t.counters or t.settles
                    or t.completion_requested or t.messages or t.events)


class KitClient:
    """The Redis client surface handlers touch: ``exists`` (the namespace marker), and the
    reads of an ancestor view (``backend.view_reads``): ``hmget``, ``hscan_iter``."""

    def __init__(self, backend: KitBackend) -> None:
        self.backend = backend

    def _hash(self, key: str) -> Hash:
        for w, h in self.backend.hashes.items():
            if self.backend.part(w).workflow(w) == key:
                return h
        return {}

    def hmget(self, key: str, names: Sequence[str]) -> list[bytes | None]:
        h = self._hash(key)
        return [h.get(n) for n in names]

    def hscan_iter(self, key: str, match: str = "*", count: int = 0) -> Iterator[tuple[bytes, bytes]]:
        prefix = match.rstrip("*")
        return iter([(k.encode(), v) for k, v in self._hash(key).items() if k.startswith(prefix)])

    def exists(self, *names: str) -> int:
        return sum(1 for n in names if (n == self.backend.keys.meta and self.backend.namespace_alive)
                   or n in {self.backend.part(w).workflow(w) for w in self.backend.hashes})


class KitBackend:
    """In-memory stand-in for RedisBackend (one partition). State: ``hashes`` (workflow id ->
    hash), ``done`` (dedup record), ``queue``, ``dead`` (dead letters), ``events``, ``notices``
    and ``plans`` (every commit attempt)."""

    def __init__(self, namespace: str = "kit") -> None:
        self.keys = NamespaceKeys(namespace, 1)
        self.client: Any = KitClient(self)
        self.namespace_alive = True
        self.hashes: dict[str, Hash] = {}
        self.done: set[str] = set()
        self.queue: list[Queued] = []
        self.dead: list[dict[str, Any]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.notices: list[tuple[str, str]] = []
        self.plans: list[Plan] = []
        self.clock = 0.0
        self._before_commit: list[Callable[[], None]] = []

    # -- given ---------------------------------------------------------------------------------

    def store(self, wf: Workflow) -> None:
        """Store ``wf`` laid out, as ``lua/submit.lua`` does: every field at version 1, ``ver`` 1."""
        h: Hash = {}
        for name, value in lay_out(wf).items():
            h[name] = value
            h[version_field(name)] = b"1"
        h["ver"] = b"1"
        self.hashes[wf.id] = h

    def before_next_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once, just before the next commit is applied (after its read and
        decision): a concurrent writer landing between a handler's read and its commit."""
        self._before_commit.append(action)

    # -- RedisBackend surface ------------------------------------------------------------------

    def part(self, workflow_id: str) -> PartitionKeys:
        return self.keys.for_workflow(workflow_id)

    def stage_ids(self, workflow_id: str) -> list[str]:
        raw = self.hashes.get(workflow_id, {}).get(STAGE_IDS_FIELD)
        return list(unpack(raw)) if raw else []

    def load_hash(self, workflow_id: str) -> dict[bytes, bytes]:
        return {k.encode(): v for k, v in self.hashes.get(workflow_id, {}).items()}

    def read(self, workflow_id: str, stage_ids: Sequence[str] = (), *, counters: Sequence[str] = (),
             with_upstreams: bool = False, with_downstreams: bool = False,
             processed_id: str | None = None) -> Snapshot:
        """What ``RedisBackend.read`` returns for the same arguments."""
        h = self.hashes.get(workflow_id, {})
        meta = unpack(h[META_FIELD]) if META_FIELD in h else None
        counts = {c: as_int(h.get(counter_field(c))) or 0 for c in counters}
        limits = {c: int(h[threshold_field(c)]) for c in counters if h.get(threshold_field(c))}
        scripted = with_upstreams or with_downstreams or bool(processed_id)
        ids: list[str] = []
        for sid in stage_ids:
            if sid and sid not in ids:
                ids.append(sid)
        if scripted:
            for sid in list(ids):
                for prefix, wanted in (("u:", with_upstreams), ("d:", with_downstreams)):
                    if wanted:
                        ids += [n for n in (h.get(prefix + sid) or b"").decode().split() if n not in ids]
        stages: dict[str, StageRecord] = {}
        for sid in ids:
            blob = h.get(stage_field(sid))
            if blob is not None:
                stages[sid] = decode_stage(blob, as_int(h.get(version_field(stage_field(sid)))) or 0)
            if with_downstreams:
                name = join_counter(sid)
                counts[name] = as_int(h.get(counter_field(name))) or 0
                if h.get(threshold_field(name)):
                    limits[name] = int(h[threshold_field(name)])
        processed = bool(scripted and processed_id and processed_id in self.done)
        return Snapshot(workflow_id, meta, as_int(h.get(version_field(META_FIELD))) or 0, stages, counts,
                        processed, limits)

    def commit(self, transition: Transition, message: Message | None, delivery: Delivery | None, *,
               windowed: bool = False) -> str:
        """Apply ``transition`` with ``lua/commit.lua``'s semantics; record it as a Plan. (One
        dedup set stands for both records: ``windowed`` only says which one Redis would use.)"""
        argv = transition.to_script_args(message.message_id or "" if message is not None else "",
                                         delivery.entry_id if delivery is not None else "", CONSUMER_GROUP)
        while self._before_commit:
            self._before_commit.pop(0)()
        h = self.hashes.get(transition.workflow_id)
        scratch: Hash = {} if h is None else h
        applied = apply_plan(scratch, self.done, argv)
        if h is None and scratch:
            self.hashes[transition.workflow_id] = scratch
        outcome = {1: CommitOutcome.OK, 0: CommitOutcome.DUPLICATE}.get(applied.code, CommitOutcome.CONFLICT)
        enqueued = self._enqueue(applied) if applied.code == 1 else []
        if applied.code == 1:
            self.events.setdefault(transition.workflow_id, []).extend(applied.events)
            self.notices += applied.notices
        self.plans.append(self._plan(transition, message, outcome, applied, enqueued))
        return outcome

    def dead_letter(self, delivery: Delivery, reason: str, error: str, *,
                    unless_processed: bool = False, workflow_id: str = "") -> bool:
        """Record a dead letter (``lua/dead_letter.lua``); a processed message with
        ``unless_processed`` is only acked (False)."""
        if unless_processed and delivery.message_id and delivery.message_id in self.done:
            return False
        self.dead.append({"message_id": delivery.message_id, "payload": delivery.payload,
                          "reason": reason, "error": error})
        return True

    # -- internals -----------------------------------------------------------------------------

    def _enqueue(self, applied: Applied) -> list[Queued]:
        out = []
        for _, payload, delay_ms, released in applied.enqueued:
            q = Queued(decode_message(payload), delay_ms / 1000.0, self.clock + max(delay_ms, 0) / 1000.0,
                       released)
            self.queue.append(q)
            out.append(q)
        return out

    def _plan(self, t: Transition, message: Message | None, outcome: str, applied: Applied,
              enqueued: list[Queued]) -> Plan:
        stages: dict[str, StageRecord] = {}
        meta: Workflow | None = None
        for name, value in t.writes.items():
            blob = encode_stage(value) if isinstance(value, StageRecord) else value
            if name.startswith("s:"):
                stages[name[2:]] = decode_stage(blob)
            elif name == META_FIELD:
                meta = meta_from_dict(unpack(blob))
        return Plan(message, t, outcome, applied.conflict_field, stages, meta, enqueued,
                    applied.events, self.refs(t.workflow_id))

    def refs(self, workflow_id: str) -> dict[str, str]:
        """Stage id -> ref id of a stored workflow."""
        h = self.hashes.get(workflow_id, {})
        return {sid: decode_stage(h[stage_field(sid)]).stage.ref_id
                for sid in self.stage_ids(workflow_id) if stage_field(sid) in h}


class Kit:
    """Real handlers over a KitBackend; the first workflow given is the default one."""

    def __init__(self, registry: TaskRegistry | None = None, config: EngineConfig | None = None) -> None:
        self.backend = KitBackend()
        self.registry = registry or TaskRegistry()
        self.config = config or EngineConfig()
        self.handlers = self._handlers(self.registry)
        self.workflow_id = ""

    def _handlers(self, registry: TaskRegistry) -> dict[type, Handler]:
        # The kit backend has the RedisBackend surface handlers use, not its type.
        ctx = HandlerContext(backend=cast(RedisBackend, self.backend), registry=registry, config=self.config)
        return default_handlers(ctx)

    # -- given ---------------------------------------------------------------------------------

    def given(self, wf: Workflow) -> Kit:
        """Store another workflow (the first one stored is the default of the helpers)."""
        self.backend.store(wf)
        self.workflow_id = self.workflow_id or wf.id
        return self

    def edit_stage(self, ref_id: str, change: Callable[[StageExecution], None]) -> None:
        """Change a stored stage in place as a concurrent writer would: its version goes up."""
        h = self.backend.hashes[self.workflow_id]
        sid = self.id(ref_id)
        name = stage_field(sid)
        rec = decode_stage(h[name])
        change(rec.stage)
        h[name] = encode_stage(rec)
        h[version_field(name)] = b"%d" % ((as_int(h.get(version_field(name))) or 0) + 1)

    # -- when ----------------------------------------------------------------------------------

    def handle(self, message: Message) -> str:
        """Handle ``message`` with its default handler (it gets an id if it has none, as a
        pushed message does); returns the outcome: 'ok', 'duplicate' or 'dead'."""
        if message.message_id is None:
            message.message_id = new_message_id()
        handler = self.handlers.get(type(message))
        if handler is None:
            raise KeyError(f"no default handler for {type(message).__name__}")
        return handler.handle(message, None)

    def step(self) -> tuple[Message, str] | None:
        """Take the queued message due first (FIFO among equal due times) and handle it."""
        if not self.backend.queue:
            return None
        q = min(self.backend.queue, key=lambda x: x.due)
        self.backend.queue.remove(q)
        self.backend.clock = max(self.backend.clock, q.due)
        return q.message, self.handle(q.message)

    def run_until_quiet(self, registry: TaskRegistry | None = None, limit: int = 10_000) -> list[Message]:
        """Handle queued messages (and those they enqueue) until none is left; returns the
        messages handled. ``registry`` replaces the kit's task registry first."""
        if registry is not None:
            self.registry = registry
            self.handlers = self._handlers(registry)
        handled: list[Message] = []
        while self.backend.queue:
            if len(handled) >= limit:
                raise AssertionError(f"still not quiet after {limit} messages")
            step = self.step()
            assert step is not None
            handled.append(step[0])
        return handled

    # -- then ----------------------------------------------------------------------------------

    @property
    def plans(self) -> list[Plan]:
        return self.backend.plans

    @property
    def last_plan(self) -> Plan:
        assert self.backend.plans, "nothing was committed"
        return self.backend.plans[-1]

    def pushed(self) -> list[tuple[Message, float]]:
        """The messages enqueued and not handled yet, with their delays (seconds), in order."""
        return [(q.message, q.delay) for q in self.backend.queue]

    def pending(self) -> list[tuple[str, str]]:
        """(type, stage ref id or '') of the queued messages, in order."""
        refs = self.backend.refs(self.workflow_id)
        return [(type(m).__name__, refs.get(getattr(m, "stage_id", ""), getattr(m, "stage_id", "")))
                for m, _ in self.pushed()]

    def id(self, ref_id: str) -> str:
        """The id of stage ``ref_id`` of the default workflow."""
        for sid, ref in self.backend.refs(self.workflow_id).items():
            if ref == ref_id:
                return sid
        raise KeyError(f"no stage {ref_id!r}")

    def record(self, ref_id: str) -> StageRecord:
        h = self.backend.hashes[self.workflow_id]
        name = stage_field(self.id(ref_id))
        return decode_stage(h[name], as_int(h.get(version_field(name))) or 0)

    def stage(self, ref_id: str) -> StageExecution:
        """Stage ``ref_id`` of the default workflow as currently stored."""
        return self.record(ref_id).stage

    def status(self, ref_id: str) -> str:
        return self.stage(ref_id).status.name

    def statuses(self) -> dict[str, str]:
        """Ref id -> status name of every stage of the default workflow."""
        wf = self.workflow()
        return {s.ref_id: s.status.name for s in wf.stages}

    def workflow(self) -> Workflow:
        wf = workflow_from_hash(self.backend.load_hash(self.workflow_id))
        assert wf is not None
        return wf

    def field(self, name: str) -> bytes | None:
        return self.backend.hashes[self.workflow_id].get(name)

    def counter(self, name: str) -> int:
        """Counter ``name`` (e.g. ``join_counter(kit.id('j'))``; missing: 0)."""
        return as_int(self.field(counter_field(name))) or 0

    def counters(self) -> dict[str, bytes]:
        return counter_state(self.backend.hashes[self.workflow_id])

    def events(self) -> list[dict[str, Any]]:
        return self.backend.events.get(self.workflow_id, [])


def given_workflow(wf: Workflow, registry: TaskRegistry | None = None,
                   config: EngineConfig | None = None) -> Kit:
    """A kit holding ``wf``, laid out with the statuses it has (counters recounted from them)."""
    return Kit(registry, config).given(wf)
