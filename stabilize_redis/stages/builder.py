"""Stage definition builders: code that gives a stage type its tasks and synthetic stages.

A builder is registered in-process by stage ``type`` (``register_builder``), like a task in a
``TaskRegistry``: a worker knows the builders its ``--app`` module registers when imported. The
engine calls a stage's builder in the worker:

* when the stage starts: ``build_tasks`` if the stage was given no tasks, then
  ``before_stages`` if it has no before-stages yet (and ``add_context_flags``);
* when its tasks (and before-stages) end: ``after_stages`` on success, ``on_failure_stages``
  on failure, each only if the stage has no stages of that kind yet.

Stages built once are stored with the workflow and kept: a stage re-run by a jump re-runs the
same tasks and synthetic stages (reset), it does not build them again. A builder that raises
fails its stage (TERMINAL by the stage's failure policy) with the error in
``context["exception"]``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from stabilize_redis.dag.graph import StageGraphBuilder
from stabilize_redis.models.stage.phases import ON_FAILURE_KEY

if TYPE_CHECKING:
    from stabilize_redis.models.stage import StageExecution
    from stabilize_redis.models.task import TaskExecution

class StageDefinitionBuilder:
    """Base class of stage definition builders; every hook does nothing by default.

    ``type`` defaults to the class name without a ``StageBuilder`` suffix, lower-cased
    (``DeployStageBuilder`` -> ``"deploy"``); ``aliases`` are further types it handles.
    """

    @property
    def type(self) -> str:
        name = type(self).__name__
        if name.endswith("StageBuilder"):
            name = name[: -len("StageBuilder")]
        return name.lower()

    @property
    def aliases(self) -> list[str]:
        return []

    def build_tasks(self, stage: StageExecution) -> list[TaskExecution]:
        """The tasks of a stage given none (called once, when it first starts)."""
        return []

    def before_stages(self, stage: StageExecution, graph: StageGraphBuilder) -> None:
        """Add to ``graph`` the stages that run before ``stage``'s tasks."""

    def after_stages(self, stage: StageExecution, graph: StageGraphBuilder) -> None:
        """Add to ``graph`` the stages that run after ``stage``'s tasks succeeded."""

    def on_failure_stages(self, stage: StageExecution, graph: StageGraphBuilder) -> None:
        """Add to ``graph`` the stages that run when ``stage`` failed (rollback, alerts)."""

    def add_context_flags(self, stage: StageExecution) -> None:
        """Adjust ``stage.context`` when it starts, before its first task runs."""


_HOOKS = ("build_tasks", "before_stages", "after_stages", "on_failure_stages", "add_context_flags")


def does_nothing(builder: StageDefinitionBuilder) -> bool:
    """True if ``builder`` overrides none of the hooks (so the engine need not consult it)."""
    return all(getattr(type(builder), hook) is getattr(StageDefinitionBuilder, hook) for hook in _HOOKS)


class NoOpStageBuilder(StageDefinitionBuilder):
    """The builder of type ``noop``: a stage that deliberately does nothing."""

    @property
    def type(self) -> str:
        return "noop"


class StageDefinitionBuilderFactory:
    """Builders by stage type (and alias). Thread-safe; ``get`` of an unknown type returns a
    builder that does nothing."""

    def __init__(self) -> None:
        self._builders: dict[str, StageDefinitionBuilder] = {}
        self._lock = threading.Lock()
        self._default = NoOpStageBuilder()
        self.register(self._default)

    def register(self, builder: StageDefinitionBuilder) -> None:
        """Register ``builder`` for its type and aliases (a later registration replaces)."""
        with self._lock:
            for name in (builder.type, *builder.aliases):
                self._builders[name] = builder

    def register_class(self, builder_class: type[StageDefinitionBuilder]) -> None:
        self.register(builder_class())

    def unregister(self, stage_type: str) -> None:
        """Forget the builder of ``stage_type`` (no error if none)."""
        with self._lock:
            self._builders.pop(stage_type, None)

    def get(self, stage_type: str) -> StageDefinitionBuilder:
        return self._builders.get(stage_type, self._default)

    def has(self, stage_type: str) -> bool:
        return stage_type in self._builders

    def list_types(self) -> list[str]:
        return list(self._builders)

    def planner(self, stage_type: str) -> StageDefinitionBuilder | None:
        """The builder of ``stage_type`` if one is registered and overrides a hook, else None."""
        builder = self._builders.get(stage_type)
        return None if builder is None or does_nothing(builder) else builder


_default_factory = StageDefinitionBuilderFactory()


def get_default_factory() -> StageDefinitionBuilderFactory:
    """The process-wide factory the engine consults."""
    return _default_factory


def register_builder(builder: StageDefinitionBuilder) -> None:
    """Register ``builder`` in the process-wide factory."""
    _default_factory.register(builder)


def get_builder(stage_type: str) -> StageDefinitionBuilder:
    """The process-wide factory's builder of ``stage_type`` (a do-nothing one if none)."""
    return _default_factory.get(stage_type)


def planner_for(stage_type: str) -> StageDefinitionBuilder | None:
    """``get_default_factory().planner(stage_type)``."""
    return _default_factory.planner(stage_type)


__all__ = ["ON_FAILURE_KEY", "NoOpStageBuilder", "StageDefinitionBuilder", "StageDefinitionBuilderFactory",
           "StageGraphBuilder", "does_nothing", "get_builder", "get_default_factory", "planner_for",
           "register_builder"]
