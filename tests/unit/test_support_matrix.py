"""The support matrix covers every field of stabilize's models, every message type and field,
and every task-result directive; each entry is either executed or refused, and every refused
use is refused naming the stage and the field (pure checks, no Redis; the end-to-end refusals
are in tests/integration/test_unsupported_rejected.py)."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import stabilize_redis.models as models_package
from stabilize_redis import StageExecution, TaskExecution, Workflow, WorkflowValidationError
from stabilize_redis.decisions.codec import StageRecord, decode_stage, encode_stage, pack, stored_form, unpack
from stabilize_redis.handlers import HANDLER_CLASSES
from stabilize_redis.handlers.task_execution import Outcome, vet_outcome
from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.status import WorkflowStatus
from stabilize_redis.queue.dispatch import _MARKERS
from stabilize_redis.queue.messages import MESSAGE_TYPES, Message
from stabilize_redis.support import (
    DIRECTIVES,
    FEATURES,
    JUMP_TO,
    MESSAGE_FIELDS,
    MESSAGE_TYPE_ENTRIES,
    MODELS,
    MULTI_INSTANCE_CONFIG,
    RESULT_FIELDS,
    STAGE,
    STAGE_CONTEXT,
    TASK,
    WORKFLOW,
    WORKFLOW_CONTEXT,
    Entry,
    NotExecutedError,
    check_message,
    result_refusal,
)
from stabilize_redis.tasks.result import TaskResult
from stabilize_redis.validation import validate_storable, validate_workflow

REPO = Path(__file__).resolve().parents[2]


# -- building a workflow that uses one refused setting (shared with the integration tests) -------


def plain_workflow() -> Workflow:
    """Two stages, 'up' -> 'build'; 'build' has three tasks (first, middle, last)."""
    up = StageExecution(ref_id="up", type="up", name="Up", tasks=[
        TaskExecution.create("up", "t", stage_start=True, stage_end=True)])
    build = StageExecution(ref_id="build", type="build", name="Build", requisite_stage_ref_ids={"up"}, tasks=[
        TaskExecution.create("first", "t", stage_start=True), TaskExecution.create("middle", "t"),
        TaskExecution.create("last", "t", stage_end=True)])
    return Workflow(application="itest", name="wf", stages=[up, build])


@dataclasses.dataclass(frozen=True)
class RefusedUse:
    """One refused entry: how to put its example into a plain workflow, and the error's start."""

    id: str
    apply: Callable[[Workflow], None]
    where: str
    entry: Entry


def _setter(pick: Callable[[Workflow], Any], name: str, value: Any) -> Callable[[Workflow], None]:
    return lambda wf: setattr(pick(wf), name, value)


def _context(pick: Callable[[Workflow], dict[str, Any]], key: str, value: Any) -> Callable[[Workflow], None]:
    return lambda wf: pick(wf).__setitem__(key, value)


def _build(wf: Workflow) -> StageExecution:
    return wf.stages[1]


def refused_uses() -> Iterator[RefusedUse]:
    """Every refused model field and context key, as a change to ``plain_workflow()``."""
    for name, entry in WORKFLOW.items():
        if entry.refused:
            yield RefusedUse(f"Workflow.{name}", _setter(lambda wf: wf, name, entry.example),
                             f"workflow 'wf': {name}: ", entry)
    for name, entry in STAGE.items():
        if entry.refused:
            yield RefusedUse(f"StageExecution.{name}", _setter(_build, name, entry.example),
                             f"stage 'build': {name}: ", entry)
    for name, entry in TASK.items():
        if entry.refused:
            yield RefusedUse(f"TaskExecution.{name}", _setter(lambda wf: _build(wf).tasks[1], name, entry.example),
                             f"stage 'build': tasks[1].{name}: ", entry)
    for name, entry in MULTI_INSTANCE_CONFIG.items():
        if entry.refused:
            config = MultiInstanceConfig(**{name: entry.example})
            yield RefusedUse(f"MultiInstanceConfig.{name}", _setter(_build, "mi_config", config),
                             f"stage 'build': mi_config.{name}: ", entry)
    for key, entry in STAGE_CONTEXT.items():
        if entry.refused:
            yield RefusedUse(f"stage context {key}", _context(lambda wf: _build(wf).context, key, entry.example),
                             f"stage 'build': context[{key!r}]: ", entry)
    for key, entry in WORKFLOW_CONTEXT.items():
        if entry.refused:
            yield RefusedUse(f"workflow context {key}", _context(lambda wf: wf.context, key, entry.example),
                             f"workflow 'wf': context[{key!r}]: ", entry)


REFUSED_USES = {use.id: use for use in refused_uses()}


def message_of(cls: type[Message], **fields: Any) -> Message:
    """A message of ``cls`` with every target id set."""
    names = {f.name for f in dataclasses.fields(cls)}
    ids = {k: v for k, v in {"execution_id": "w1", "stage_id": "s1", "task_id": "t1"}.items() if k in names}
    return cls(**ids, **fields)


# -- the matrix is complete -------------------------------------------------------------------


def _model_dataclasses() -> set[type]:
    found: set[type] = set()
    for info in pkgutil.walk_packages(models_package.__path__, models_package.__name__ + "."):
        module = __import__(info.name, fromlist=["_"])
        for _, value in inspect.getmembers(module, inspect.isclass):
            if dataclasses.is_dataclass(value) and value.__module__.startswith(models_package.__name__):
                found.add(value)
    return found


def test_every_model_dataclass_is_in_the_matrix() -> None:
    assert _model_dataclasses() == set(MODELS)


@pytest.mark.parametrize("cls", list(MODELS), ids=lambda c: c.__name__)
def test_every_model_field_has_exactly_one_entry(cls: type) -> None:
    assert [f.name for f in dataclasses.fields(cls)] == list(MODELS[cls])


def test_every_message_type_and_every_message_field_has_an_entry() -> None:
    assert set(MESSAGE_TYPE_ENTRIES) == set(MESSAGE_TYPES)
    assert {f.name for cls in MESSAGE_TYPES.values() for f in dataclasses.fields(cls)} == set(MESSAGE_FIELDS)


def test_every_task_result_status_and_field_has_a_directive_entry() -> None:
    assert set(DIRECTIVES) == {s.name for s in WorkflowStatus} | {JUMP_TO}
    assert [f.name for f in dataclasses.fields(TaskResult)] == list(RESULT_FIELDS)


def test_the_executed_message_types_are_exactly_those_with_a_built_in_handler() -> None:
    handled = {cls.message_type.__name__ for cls in HANDLER_CLASSES}
    markers = {cls.__name__ for cls in _MARKERS}
    refused = {name for name, entry in MESSAGE_TYPE_ENTRIES.items() if entry.refused}
    assert refused.isdisjoint(handled | markers)
    assert handled | markers | refused == set(MESSAGE_TYPES)


def _all_entries() -> Iterator[tuple[str, Entry]]:
    for cls, table in MODELS.items():
        yield from ((f"{cls.__name__}.{n}", e) for n, e in table.items())
    for label, table in (("message", MESSAGE_TYPE_ENTRIES), ("message field", MESSAGE_FIELDS),
                         ("directive", DIRECTIVES), ("result field", RESULT_FIELDS),
                         ("stage context", STAGE_CONTEXT), ("workflow context", WORKFLOW_CONTEXT)):
        yield from ((f"{label} {n}", e) for n, e in table.items())


def test_every_entry_says_what_is_done_or_why_not() -> None:
    for label, entry in _all_entries():
        assert entry.note.strip(), label
        if entry.needs is not None:
            assert entry.needs in FEATURES, label
            assert entry.needs.refusal.strip(), label


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_matrix_names_exists() -> None:
    named = [e.test for _, e in _all_entries() if e.test] + [t for f in FEATURES for t in f.tests]
    assert named
    for node_id in named:
        file, _, name = node_id.partition("::")
        assert (REPO / file).is_file(), node_id
        assert name in _defined_tests(REPO / file), node_id


def test_an_executed_feature_names_the_tests_that_show_it() -> None:
    for feature in FEATURES:
        assert not feature.executed or feature.tests, feature.name


# -- refused settings are refused naming stage and field ---------------------------------------


def _default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_every_refused_field_given_its_default_explicitly_is_accepted() -> None:
    wf = plain_workflow()
    picks: dict[type, Callable[[Workflow], Any]] = {
        Workflow: lambda w: w, StageExecution: _build, TaskExecution: lambda w: _build(w).tasks[1]}
    for cls, pick in picks.items():
        for name, entry in MODELS[cls].items():
            if entry.refused:
                setattr(pick(wf), name, _default(cls, name))
    validate_workflow(wf)


@pytest.mark.parametrize("use", list(REFUSED_USES))
def test_each_refused_setting_is_refused_naming_stage_and_field(use: str) -> None:
    refused = REFUSED_USES[use]
    wf = plain_workflow()
    refused.apply(wf)
    assert refused.entry.needs is not None

    for check in (validate_workflow, validate_storable):  # submit; store.store and Orchestrator.start
        with pytest.raises(WorkflowValidationError) as info:
            check(wf)
        message = str(info.value)
        assert message.startswith(refused.where), message
        assert refused.entry.needs.refusal in message


def test_every_join_type_is_accepted() -> None:
    from stabilize_redis import JoinType

    for join in JoinType:
        wf = plain_workflow()
        wf.stages[1].join_type = join
        validate_workflow(wf)


# -- messages and task results -----------------------------------------------------------------


def test_a_message_type_no_handler_executes_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every built-in type has a handler now; the rule still guards a type added before its
    # handler: StartWaitingWorkflows stands in for one here.
    import stabilize_redis.support as support

    unbuilt = support.Feature("an unbuilt feature", "an unbuilt feature is not executed by this engine yet")
    monkeypatch.setitem(MESSAGE_TYPE_ENTRIES, "StartWaitingWorkflows", support.needs_all(unbuilt))
    monkeypatch.setattr(support, "_accepted_here", set())
    message = message_of(MESSAGE_TYPES["StartWaitingWorkflows"])
    with pytest.raises(NotExecutedError, match=r"^StartWaitingWorkflows: an unbuilt feature is not executed .*"
                                               r"no handler for StartWaitingWorkflows is registered"):
        check_message(message)


@pytest.mark.parametrize("name", [n for n, e in MESSAGE_TYPE_ENTRIES.items() if not e.refused])
def test_a_message_type_the_engine_executes_is_accepted(name: str) -> None:
    check_message(message_of(MESSAGE_TYPES[name]))


@pytest.mark.parametrize("field", [n for n, e in MESSAGE_FIELDS.items() if e.refused and e.example is not None])
def test_a_message_field_value_the_engine_does_not_honour_is_refused_naming_it(field: str) -> None:
    entry = MESSAGE_FIELDS[field]
    executed = [cls for n, cls in MESSAGE_TYPES.items()
                if not MESSAGE_TYPE_ENTRIES[n].refused and field in {f.name for f in dataclasses.fields(cls)}]
    assert executed
    for cls in executed:
        with pytest.raises(NotExecutedError, match=rf"^{cls.__name__}\.{field}: "):
            check_message(message_of(cls, **{field: entry.example}))


@pytest.mark.parametrize("key", list(DIRECTIVES))
def test_a_task_result_is_refused_exactly_when_its_directive_is(key: str) -> None:
    entry = DIRECTIVES[key]
    if not entry.refused:
        result = TaskResult.jump_to("elsewhere") if key == JUMP_TO else TaskResult(WorkflowStatus[key])
        assert result_refusal(result) is None
        return
    assert entry.needs is not None
    refusal = result_refusal(entry.example)
    assert refusal is not None and entry.needs.refusal in refusal
    shown = {JUMP_TO: "TaskResult.jump_to('elsewhere')", "SUSPENDED": "TaskResult.suspend()",
             "REDIRECT": "TaskResult.redirect()"}.get(key, f"status {key}")
    assert refusal.startswith(shown), refusal


def test_vet_outcome_fails_a_result_that_is_no_outcome_naming_the_status_and_the_task() -> None:
    vetted = vet_outcome(Outcome(result=TaskResult(WorkflowStatus.PAUSED)), "stage 'review': task 'route'")
    assert vetted.result is None and isinstance(vetted.error, NotExecutedError) and not vetted.transient
    assert str(vetted.error).startswith("stage 'review': task 'route' result: status PAUSED: ")


# -- values stabilize writes with json default=str -----------------------------------------------

WHEN = datetime.datetime(2030, 1, 2, 3, 4, 5)
TEXT_VALUES = {"at": WHEN, "day": WHEN.date(), "price": Decimal("9.90"), "uid": UUID(int=7),
               "nested": [{"t": datetime.time(1, 2)}, (datetime.timedelta(minutes=1),)]}
AS_TEXT = {"at": "2030-01-02 03:04:05", "day": "2030-01-02", "price": "9.90",
           "uid": "00000000-0000-0000-0000-000000000007", "nested": [{"t": "01:02:00"}, ["0:01:00"]]}


def test_context_and_outputs_store_a_datetime_as_stabilize_default_str_does_and_nothing_else_converts() -> None:
    import json

    assert json.loads(json.dumps(TEXT_VALUES, default=str)) == AS_TEXT  # what stabilize stores
    wf = plain_workflow()
    wf.context["when"] = WHEN
    wf.stages[1].context.update(TEXT_VALUES)
    wf.stages[1].outputs["at"] = WHEN
    validate_workflow(wf)

    stored = decode_stage(encode_stage(StageRecord(wf.stages[1]))).stage
    assert {k: stored.context[k] for k in AS_TEXT} == AS_TEXT and stored.outputs == {"at": AS_TEXT["at"]}
    assert unpack(pack({"when": WHEN})) == {"when": AS_TEXT["at"]}
    assert stored_form(TEXT_VALUES, "ctx") == AS_TEXT

    wf = plain_workflow()  # only context and outputs convert; other objects are still refused
    wf.stages[1].start_time = WHEN  # type: ignore[assignment]
    with pytest.raises(WorkflowValidationError, match="stage 'build': start_time: value of type datetime"):
        validate_workflow(wf)
    wf = plain_workflow()
    wf.stages[1].context["obj"] = object()
    with pytest.raises(WorkflowValidationError, match=r"stage 'build': context\.obj: value of type object"):
        validate_workflow(wf)


def test_a_task_result_datetime_is_converted_before_it_is_merged() -> None:
    result = TaskResult.success(outputs={"at": WHEN}, context={"seen": [WHEN]})
    vetted = vet_outcome(Outcome(result=result), "stage 'a': task 't'")
    assert vetted.error is None and vetted.result is not None
    assert vetted.result.outputs == {"at": AS_TEXT["at"]} and vetted.result.context == {"seen": [AS_TEXT["at"]]}
    assert result.outputs == {"at": WHEN}, "the task's own result object is left as it was"
