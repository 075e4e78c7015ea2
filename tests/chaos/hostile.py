"""The attacker of the hostile-input chaos run (``test_hostile.py``): a thread that, round after
round until stopped, throws every kind of hostile input of issue #6 at a running namespace and
records what each must end as.

One round forges ready-stream entries of every malformed kind (they must be dead-lettered
``undecodable``), messages naming workflows, stages and tasks that do not exist
(``unknown_target``) and a valid message put in the wrong partition under the entry id of a live
entry of its workflow's own partition (``wrong_partition``, the live entry untouched); it submits
a workflow whose task returns a value no store could keep, a workflow whose ``stageEnabled`` or
split condition attacks the expression evaluator, a poisoned workflow (which ``submit`` must
refuse, writing nothing) and, every few rounds, a workflow whose hash it then poisons in Redis
directly (a NUL in its name: the checkpointer must quarantine it).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from stabilize_redis import Client, SplitType, Workflow, WorkflowStatus, WorkflowValidationError
from stabilize_redis.decisions.codec import pack, unpack
from stabilize_redis.keys import META_FIELD, NamespaceKeys, partition_of, version_field
from stabilize_redis.queue.messages import (
    CancelStage,
    CancelWorkflow,
    CompleteStage,
    CompleteTask,
    CompleteWorkflow,
    Message,
    PauseTask,
    ResumeStage,
    RunTask,
    SkipStage,
    StartStage,
    StartTask,
    StartWorkflow,
)
from tests.chaos.app import POISONS
from tests.chaos.harness import Expected, _stage

S = WorkflowStatus
UNDECODABLE, UNKNOWN_TARGET, WRONG_PARTITION = "undecodable", "unknown_target", "wrong_partition"


def _encoded(message: Message, message_id: str) -> str:
    message.message_id = message_id
    return message.encode()


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def malformed_entries(tag: str, oversize: bool) -> list[tuple[str, dict[str, str | bytes]]]:
    """(kind, stream entry fields) of every malformed entry kind; ``tag`` makes the ids unique.
    ``oversize`` adds a payload over the 1 MiB limit."""
    def mid(kind: str) -> str:
        return f"hostile-{tag}-{kind}"

    def obj(**fields: Any) -> str:
        return json.dumps(fields)

    entries: list[tuple[str, dict[str, str | bytes]]] = [
        ("garbage-bytes", {"id": mid("garbage-bytes"), "m": b"\xff\xfe\x00\x9c" + bytes(range(128, 192))}),
        ("not-json", {"id": mid("not-json"), "m": "{this is not json"}),
        ("json-not-an-object", {"id": mid("json-not-an-object"), "m": "[1, 2, 3]"}),
        ("unknown-type", {"id": mid("unknown-type"), "m": obj(type="Teleport", execution_id="w")}),
        ("nan-field", {"id": mid("nan-field"), "m": '{"type": "StartWorkflow", "execution_id": "w", "attempts": NaN}'}),
        ("100000-deep", {"id": mid("100000-deep"), "m": _deep(100_000)}),
        ("enum-list", {"id": mid("enum-list"), "m": obj(type="CompleteTask", execution_id="w", stage_id="s",
                                                          task_id="t", status=["SUCCEEDED"])}),
        ("enum-dict", {"id": mid("enum-dict"), "m": obj(type="ContinueParentStage", execution_id="w",
                                                          stage_id="s", phase={"x": 1})}),
        ("list-stage-id", {"id": mid("list-stage-id"), "m": obj(type="StartStage", execution_id="w",
                                                                  stage_id=["s1", "s2"])}),
        ("bool-attempts", {"id": mid("bool-attempts"), "m": obj(type="StartWorkflow", execution_id="w",
                                                                  attempts=True)}),
        ("string-retry-count", {"id": mid("string-retry-count"), "m": obj(type="CompleteWorkflow",
                                                                            execution_id="w", retry_count="2")}),
        ("no-m-field", {"id": mid("no-m-field")}),
        ("no-id-field", {"m": _encoded(StartWorkflow(execution_id="w"), mid("no-id-field"))}),
    ]
    if oversize:
        entries.append(("over-1-MiB", {"id": mid("over-1-MiB"), "m": "[" + "0," * 600_000 + "0]"}))
    return entries


def unknown_target_messages(tag: str, wf: Workflow) -> list[tuple[str, Message]]:
    """(kind, message) naming a workflow that does not exist, or a stage or task missing from
    the existing workflow ``wf``."""
    ghost_wf, ghost_stage, ghost_task = f"ghost-wf-{tag}", f"ghost-stage-{tag}", f"ghost-task-{tag}"
    stage = wf.stages[0]
    sid, tid = stage.id, stage.tasks[0].id
    return [
        ("StartWorkflow-no-workflow", StartWorkflow(execution_id=ghost_wf)),
        ("CancelWorkflow-no-workflow", CancelWorkflow(execution_id=ghost_wf)),
        ("CompleteWorkflow-no-workflow", CompleteWorkflow(execution_id=ghost_wf)),
        ("RunTask-no-workflow", RunTask(execution_id=ghost_wf, stage_id=sid, task_id=tid)),
        ("StartStage-no-stage", StartStage(execution_id=wf.id, stage_id=ghost_stage)),
        ("CompleteStage-no-stage", CompleteStage(execution_id=wf.id, stage_id=ghost_stage)),
        ("SkipStage-no-stage", SkipStage(execution_id=wf.id, stage_id=ghost_stage)),
        ("CancelStage-no-stage", CancelStage(execution_id=wf.id, stage_id=ghost_stage)),
        ("ResumeStage-no-stage", ResumeStage(execution_id=wf.id, stage_id=ghost_stage)),
        ("StartTask-no-task", StartTask(execution_id=wf.id, stage_id=sid, task_id=ghost_task)),
        ("RunTask-no-task", RunTask(execution_id=wf.id, stage_id=sid, task_id=ghost_task)),
        ("CompleteTask-no-task", CompleteTask(execution_id=wf.id, stage_id=sid, task_id=ghost_task)),
        ("PauseTask-no-task", PauseTask(execution_id=wf.id, stage_id=sid, task_id=ghost_task)),
    ]


EVALUATOR_ATTACKS: list[tuple[str, str]] = [
    # (expression, what the recorded error must say)
    ("[['a'*100000]*100000]*100000 == 1", "work budget"),
    ("len(str([[1]*100000]*100000)) > 0", "work budget"),
    ("[0]*99999+[1] in [[0]*100000]*100000", "work budget"),
    ("[['a'*100000]*100000]*100000 == [['a'*100000]*100000]*100000", "work budget"),
    ("min([[0]*100000]*100000)", "work budget"),
    ("'%0999999999d' % 1 == ''", "formatting"),
]


def stage_enabled_attack(expression: str) -> tuple[Workflow, Expected]:
    """a -> maybe (``stageEnabled`` is ``expression``) -> z: the condition fails, so ``maybe``
    runs (a failing condition never silently skips work) and every stage succeeds."""
    stages = [_stage("a", work_s=0.01),
              _stage("maybe", requires=("a",), work_s=0.01,
                     stageEnabled={"type": "expression", "expression": expression}),
              _stage("z", requires=("maybe",), work_s=0.01)]
    wf = Workflow.create(application="hostile", name="stage-enabled-attack", stages=stages)
    return wf, Expected("stage-enabled-attack", S.SUCCEEDED, {s.ref_id: S.SUCCEEDED for s in stages},
                        {s.ref_id: 1 for s in stages})


def split_attack(expression: str) -> Workflow:
    """route (OR split: ``left`` on a sane condition, ``right`` on ``expression``) -> left,
    right -> end: ``right`` is skipped, everything else succeeds."""
    route = _stage("route", work_s=0.01)
    route.split_type = SplitType.OR
    route.split_conditions = {"left": "done_route == True", "right": expression}
    stages = [route, _stage("left", requires=("route",), work_s=0.01),
              _stage("right", requires=("route",), work_s=0.01),
              _stage("end", requires=("left", "right"), work_s=0.01)]
    return Workflow.create(application="hostile", name="split-attack", stages=stages)


POISON_REASONS: dict[str, list[str]] = {
    "nan": ["outputs.ratio", "nan"],
    "int-beyond-64-bits": ["outputs.big", "64-bit"],
    "nul-string": ["context.log", "NUL"],
    "600-deep": ["outputs.tree.a", "nest"],
}
"""What the recorded failure of each ``app.POISONS`` result must say."""
assert set(POISON_REASONS) == set(POISONS)


def poisoned_result(kind: str) -> tuple[Workflow, Expected]:
    """emit (returns the ``kind`` poison) -> after: emit fails TERMINAL once, after never starts."""
    stages = [_stage("emit", "poison", work_s=0.0, poison=kind), _stage("after", requires=("emit",), work_s=0.01)]
    wf = Workflow.create(application="hostile", name=f"poisoned-result-{kind}", stages=stages)
    return wf, Expected("poisoned-result", S.TERMINAL, {"emit": S.TERMINAL, "after": S.NOT_STARTED},
                        {"emit": 1, "after": 0})


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _poisoned(name: str = "poisoned", context: dict[str, Any] | None = None,
              stage_context: dict[str, Any] | None = None) -> Workflow:
    return Workflow(application="hostile", name=name, context=dict(context or {}),
                    stages=[_stage("s", **(stage_context or {}))])


POISONED_SUBMITS: list[tuple[Callable[[], Workflow], str]] = [
    # (workflow factory, what the WorkflowValidationError must say)
    (lambda: _poisoned(stage_context={"ratio": float("nan")}), "nan"),
    (lambda: _poisoned(context={"limit": float("inf")}), "inf"),
    (lambda: _poisoned(stage_context={"seed": 2**70}), "64-bit"),
    (lambda: _poisoned(name="deploy\x00prod"), "NUL"),
    (lambda: _poisoned(stage_context={"tree": _nested(600)}), "nest"),
]


def poison_name_in_redis(client: redis.Redis, keys: NamespaceKeys, workflow_id: str) -> None:
    """Put a NUL into the stored workflow's name, straight into its hash (as a hand edit or an
    older version could), bumping the meta's version like any writer so that a handler which
    read the meta before re-reads it rather than writing the old name back."""
    key = keys.for_workflow(workflow_id).workflow(workflow_id)

    def spoil(pipe: Any) -> None:
        meta = unpack(pipe.hget(key, META_FIELD))
        pipe.multi()
        pipe.hset(key, META_FIELD, pack({**meta, "name": "hostile\x00name"}))
        pipe.hincrby(key, version_field(META_FIELD), 1)

    client.transaction(spoil, key)


@dataclass
class Misrouted:
    """A message forged into partition ``put_in`` under the entry id of a live entry of its
    workflow's own partition ``home``."""

    message_id: str
    workflow_id: str
    home: int
    put_in: int
    entry_id: bytes


@dataclass
class Attacker:
    """Runs rounds of attacks every ``period`` seconds from ``start`` until ``stop``; records
    what each attack must end as. ``targets``: existing healthy workflows to name in messages
    with a missing stage or task (appended to by the caller as it submits)."""

    raw: redis.Redis
    keys: NamespaceKeys
    client: Client
    targets: list[Workflow]
    period: float = 0.25
    seed: int = 5
    rounds: int = 0
    dead: dict[str, tuple[str, str]] = field(default_factory=dict)
    """identity (message id, else payload) -> (expected reason, kind) of every forged entry."""
    misrouted: list[Misrouted] = field(default_factory=list)
    misroute_misses: int = 0
    poisoned: list[tuple[Workflow, Expected, str]] = field(default_factory=list)
    enabled_attacks: list[tuple[Workflow, Expected, str]] = field(default_factory=list)
    split_attacks: list[tuple[Workflow, str]] = field(default_factory=list)
    refused: list[tuple[Workflow, str, str]] = field(default_factory=list)
    """(workflow, what the error must say, the error) of every poisoned submit."""
    hash_poisoned: list[Workflow] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="attacker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current round; re-raises the first error a round raised."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)
        assert not self._thread.is_alive(), "the attacker did not stop"
        if self.errors:
            raise self.errors[0]

    def workflow_ids(self) -> list[str]:
        """Every workflow the attacker had stored (all but the refused submits)."""
        return [wf.id for wf, _, _ in self.poisoned + self.enabled_attacks] + \
               [wf.id for wf, _ in self.split_attacks] + [wf.id for wf in self.hash_poisoned]

    def _run(self) -> None:
        rnd = random.Random(self.seed)
        while not self._stop.is_set():
            try:
                self.round(rnd)
            except BaseException as e:  # noqa: BLE001 - handed to the test by stop()
                self.errors.append(e)
                return
            self._stop.wait(self.period)  # the attack's pace, not a synchronisation

    def _forge(self, partition: int, fields: dict[str, str | bytes], entry_id: str | bytes = "*") -> None:
        self.raw.xadd(self.keys.partition(partition).ready, fields, id=entry_id)  # type: ignore[arg-type]

    def round(self, rnd: random.Random) -> None:
        r = self.rounds
        tag = f"{self.seed}-{r}"
        parts = self.keys.partitions
        for k, (kind, fields) in enumerate(malformed_entries(tag, oversize=r % 10 == 0)):
            self._forge((r + k) % parts, fields)
            self.dead[str(fields.get("id") or fields["m"])] = (UNDECODABLE, kind)
        if self.targets:
            for kind, message in unknown_target_messages(tag, rnd.choice(self.targets)):
                mid = f"hostile-{tag}-{kind}"
                self._forge(partition_of(message.workflow_id, parts), {"id": mid, "m": _encoded(message, mid)})
                self.dead[mid] = (UNKNOWN_TARGET, kind)
        self._misroute(tag, rnd)
        kind = list(POISONS)[r % len(POISONS)]
        wf, exp = poisoned_result(kind)
        self.client.submit(wf)
        self.poisoned.append((wf, exp, kind))
        expression, says = EVALUATOR_ATTACKS[(r // 2) % len(EVALUATOR_ATTACKS)]
        if r % 2 == 0:
            wf, exp = stage_enabled_attack(expression)
            self.client.submit(wf)
            self.enabled_attacks.append((wf, exp, says))
        else:
            wf = split_attack(expression)
            self.client.submit(wf)
            self.split_attacks.append((wf, says))
        build, says = POISONED_SUBMITS[r % len(POISONED_SUBMITS)]
        wf = build()
        try:
            self.client.submit(wf)
        except WorkflowValidationError as e:
            self.refused.append((wf, says, str(e)))
        else:
            raise AssertionError(f"submit accepted a poisoned workflow ({says}): {wf.id}")
        if r % 4 == 0:
            wf = Workflow.create(application="hostile", name="to-be-poisoned", stages=[
                _stage("a", work_s=0.05), _stage("b", requires=("a",), work_s=0.05),
                _stage("c", requires=("b",), work_s=0.05)])
            self.client.submit(wf)
            poison_name_in_redis(self.raw, self.keys, wf.id)
            self.hash_poisoned.append(wf)
        self.rounds += 1

    def _misroute(self, tag: str, rnd: random.Random) -> None:
        """Forge a valid StartWorkflow into another partition under the id of the newest live
        entry of its workflow's partition. XADD takes an explicit id only above the stream's
        last one, so this tries the other partitions in turn; a round where none takes it (or
        no live entry is found) counts a miss."""
        parts = self.keys.partitions
        order = list(range(parts))
        rnd.shuffle(order)
        for home in order:
            newest: list[tuple[bytes, dict[bytes, bytes]]] = self.raw.xrevrange(  # type: ignore[assignment]
                self.keys.partition(home).ready, count=1)
            if not newest:
                continue
            entry_id, fields = newest[0]
            live_mid = (fields.get(b"id") or b"").decode(errors="replace")
            try:
                wid = json.loads(fields.get(b"m") or b"")["execution_id"]
            except (ValueError, TypeError, KeyError, RecursionError):
                continue
            if live_mid.startswith("hostile-") or not isinstance(wid, str) or partition_of(wid, parts) != home:
                continue  # one of ours, not a live entry
            mid = f"hostile-{tag}-wrong-partition"
            payload = _encoded(StartWorkflow(execution_id=wid), mid)
            for other in [p for p in order if p != home]:
                try:
                    self._forge(other, {"id": mid, "m": payload}, entry_id=entry_id)
                except redis.ResponseError:
                    continue
                self.misrouted.append(Misrouted(mid, wid, home, other, entry_id))
                self.dead[mid] = (WRONG_PARTITION, "wrong-partition")
                return
        self.misroute_misses += 1
