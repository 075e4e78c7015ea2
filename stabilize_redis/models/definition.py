"""A workflow given as data - what ``_sub_workflow_config`` holds - turned into models.

``workflow_from_definition({"name", "application", "context", "stages"}, workflow_id)``: each
stage is a dict of StageExecution fields, its ``tasks`` dicts of TaskExecution fields. Enums are
given by name (``"N_OF_M"``), ``requisite_stage_ref_ids`` as a list, ``mi_config`` as
``MultiInstanceConfig.to_dict()``. A new workflow starts fresh, so run-time state (ids,
statuses, times, versions, outputs) and synthetic-stage fields (synthetic stages are built by
stage definition builders) are refused, as is any unknown field: ``DefinitionError`` names the
stage (by index and ref id) and the field. When no task says ``stage_start``/``stage_end``,
the first and last tasks do.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

from stabilize_redis.models.multi_instance import MultiInstanceConfig
from stabilize_redis.models.stage import JoinType, SplitType, StageExecution
from stabilize_redis.models.task import TaskExecution
from stabilize_redis.models.workflow import Workflow

E = TypeVar("E", bound=Enum)


class DefinitionError(ValueError):
    """A workflow definition given as data that cannot be built; the text says where and why."""


_STAGE_FIELDS = {
    "ref_id": str, "type": str, "name": str, "context": dict, "tasks": list, "requisite_stage_ref_ids": list,
    "join_type": JoinType, "join_threshold": int, "split_type": SplitType, "split_conditions": dict,
    "mutex_key": str, "deferred_choice_group": str, "milestone_ref_id": str, "milestone_status": str,
    "cancel_region": str, "output_reducers": dict, "start_time_expiry": int, "mi_config": MultiInstanceConfig,
}
_TASK_FIELDS = {"name": str, "implementing_class": str, "stage_start": bool, "stage_end": bool}
_FRESH = {"id", "status", "start_time", "end_time", "version", "outputs", "task_exception_details",
          "parent_stage_id", "synthetic_stage_owner"}


def _value(where: str, name: str, kind: Any, value: Any) -> Any:
    if value is None and name not in ("ref_id", "tasks"):
        return None
    if isinstance(kind, type) and issubclass(kind, Enum):
        return _enum(where, name, kind, value)
    if kind is MultiInstanceConfig:
        if not isinstance(value, dict):
            raise DefinitionError(f"{where}: {name} must be an object, not {type(value).__name__}")
        try:
            return MultiInstanceConfig.from_dict(value)
        except (TypeError, ValueError, KeyError) as e:
            raise DefinitionError(f"{where}: {name}: {e}") from None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DefinitionError(f"{where}: {name} must be an integer, not {value!r}")
    if kind is list and isinstance(value, (set, tuple)):
        value = list(value)
    if not isinstance(value, kind):
        raise DefinitionError(f"{where}: {name} must be {kind.__name__}, not {type(value).__name__}")
    return value


def _enum(where: str, name: str, kind: type[E], value: Any) -> E:
    if isinstance(value, kind):
        return value
    if isinstance(value, str) and value.upper() in kind.__members__:
        return kind[value.upper()]
    raise DefinitionError(f"{where}: {name} must be one of {', '.join(kind.__members__)}, not {value!r}")


def _fields(where: str, data: Any, allowed: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DefinitionError(f"{where}: must be an object, not {type(data).__name__}")
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name in _FRESH:
            raise DefinitionError(f"{where}: {name} is run-time state; a new workflow starts fresh")
        if name not in allowed:
            raise DefinitionError(f"{where}: unknown field {name!r}")
        out[name] = _value(where, name, allowed[name], value)
    return {k: v for k, v in out.items() if v is not None}


def _task(where: str, data: Any) -> TaskExecution:
    f = _fields(where, data, _TASK_FIELDS)
    if not f.get("implementing_class"):
        raise DefinitionError(f"{where}: implementing_class is required")
    return TaskExecution.create(name=f.get("name") or f["implementing_class"],
                                implementing_class=f["implementing_class"],
                                stage_start=f.get("stage_start", False), stage_end=f.get("stage_end", False))


def _stage(index: int, data: Any) -> StageExecution:
    ref = data.get("ref_id") if isinstance(data, dict) else None
    where = f"stage {index} ({ref!r})" if ref else f"stage {index}"
    f = _fields(where, data, _STAGE_FIELDS)
    if not f.get("ref_id"):
        raise DefinitionError(f"{where}: ref_id is required")
    tasks = [_task(f"{where} task {i}", t) for i, t in enumerate(f.pop("tasks", []))]
    if tasks and not any(t.stage_start for t in tasks):
        tasks[0].stage_start = True
    if tasks and not any(t.stage_end for t in tasks):
        tasks[-1].stage_end = True
    f["requisite_stage_ref_ids"] = set(f.get("requisite_stage_ref_ids", []))
    f.setdefault("type", f["ref_id"])
    f.setdefault("name", f["ref_id"])
    try:
        return StageExecution(tasks=tasks, **f)
    except (TypeError, ValueError) as e:
        raise DefinitionError(f"{where}: {e}") from None


def workflow_from_definition(definition: Any, workflow_id: str) -> Workflow:
    """The NOT_STARTED workflow ``workflow_id`` that ``definition`` describes (module docstring);
    raises DefinitionError, or the graph errors of ``Workflow.create``."""
    if not isinstance(definition, dict):
        raise DefinitionError(f"a workflow definition must be an object, not {type(definition).__name__}")
    unknown = set(definition) - {"name", "application", "context", "stages"}
    if unknown:
        raise DefinitionError(f"workflow definition: unknown field(s) {', '.join(sorted(unknown))}")
    stages = definition.get("stages")
    if not isinstance(stages, list) or not stages:
        raise DefinitionError("workflow definition: stages must be a non-empty list")
    context = definition.get("context") or {}
    if not isinstance(context, dict):
        raise DefinitionError("workflow definition: context must be an object")
    wf = Workflow.create(application=str(definition.get("application") or "stabilize"),
                         name=str(definition.get("name") or "sub-workflow"),
                         stages=[_stage(i, s) for i, s in enumerate(stages)], context=dict(context))
    wf.id = workflow_id
    return wf


__all__ = ["DefinitionError", "workflow_from_definition"]
