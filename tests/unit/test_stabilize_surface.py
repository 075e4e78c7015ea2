"""Small behaviours of stabilize's public API that code written for it relies on: graph-sort
errors, error text, handler retries, cancellation helpers and import paths."""

from __future__ import annotations

import importlib
import threading
from typing import Any

import pytest

from stabilize_redis.dag.topological import CircularDependencyError, get_execution_layers, topological_sort
from stabilize_redis.errors import ConcurrencyError, PermanentError, TransientError
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.queue.messages import StartStage


def stage(ref: str, *requires: str) -> StageExecution:
    return StageExecution.create("t", ref.upper(), ref, requisite_stage_ref_ids=set(requires))


def test_sorting_a_stage_that_requires_itself_raises_circular_dependency() -> None:
    with pytest.raises(CircularDependencyError, match="'a' requires itself"):
        topological_sort([stage("a", "a")])
    with pytest.raises(CircularDependencyError):
        get_execution_layers([stage("a"), stage("b", "b")])


def test_sorting_a_stage_whose_requisite_does_not_exist_raises_circular_dependency() -> None:
    with pytest.raises(CircularDependencyError, match="'nonexistent'"):
        topological_sort([stage("a", "nonexistent")])
    with pytest.raises(CircularDependencyError):
        get_execution_layers([stage("a"), stage("b", "ghost")])


def test_transient_error_text_carries_its_code_and_cause() -> None:
    assert str(TransientError("rate limited")) == "rate limited (code=101)"
    assert str(ConcurrencyError("version moved")) == "version moved (code=105)"
    assert str(PermanentError("bad", cause=OSError("disk"))) == "bad (code=102) caused by: disk"
    assert str(TransientError("x", code=0)) == "x"


def test_stabilize_handler_retries_concurrency_errors_up_to_its_config() -> None:
    from stabilize_redis.handlers.stabilize_handler import StabilizeHandler
    from stabilize_redis.resilience.config import HandlerConfig

    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConcurrencyError("moved")
        return "done"

    class Custom(StabilizeHandler):
        @property
        def message_type(self) -> type:
            return StartStage

        def handle(self, message: Any) -> None:
            pass

    handler = Custom(queue=None, repository=None,
                     handler_config=HandlerConfig(concurrency_max_retries=5, concurrency_min_delay_ms=1))
    assert handler.retry_on_concurrency_error(flaky, "test") == "done" and calls == 3

    calls = -10
    stingy = Custom(queue=None, repository=None,
                    handler_config=HandlerConfig(concurrency_max_retries=1, concurrency_min_delay_ms=1))
    with pytest.raises(ConcurrencyError):
        stingy.retry_on_concurrency_error(flaky)
    assert calls == -8


def test_cancellation_helpers_register_cancel_and_bind_tokens_per_thread() -> None:
    from stabilize_redis.resilience import cancellation as c

    c.reset_cancellation_state()
    token = c.register_token("task-1")
    assert c.get_token("task-1") is token and c.cancel_task("task-1") and token.is_cancelled
    assert not c.cancel_task("task-unknown")
    c.unregister_token("task-1")
    assert c.get_token("task-1") is None

    fresh = c.CancellationToken()
    binding = c.bind_current_token(fresh)
    try:
        assert c.current_cancellation_token() is fresh and not c.is_cancellation_requested()
        seen: list[object] = []
        other = threading.Thread(target=lambda: seen.append(c.current_cancellation_token()))
        other.start()
        other.join()
        assert seen == [None]
        fresh.cancel()
        assert c.is_cancellation_requested()
        with pytest.raises(c.TaskCancelledError):
            c.raise_if_cancellation_requested()
    finally:
        c.reset_current_token(binding)
    assert c.current_cancellation_token() is None


@pytest.mark.parametrize("module, names", [
    ("stabilize_redis", ["StageContext", "WorkflowRecovery", "RecoveryResult", "recover_on_startup",
                         "StabilizeHandler", "StartWorkflowHandler", "CancelStageHandler",
                         "QueueProcessorConfig", "CancellationToken", "is_cancellation_requested"]),
    ("stabilize_redis.context", ["StageContext"]),
    ("stabilize_redis.context.stage_context", ["StageContext", "create_merged_context"]),
    ("stabilize_redis.recovery", ["WorkflowRecovery", "RecoveryResult", "recover_on_startup"]),
    ("stabilize_redis.queue.processor", ["QueueProcessor", "QueueProcessorConfig"]),
    ("stabilize_redis.queue", ["Queue", "QueueProcessor"]),
    ("stabilize_redis.queue.processor.config", ["QueueProcessorConfig"]),
    ("stabilize_redis.persistence.store", ["WorkflowStore", "WorkflowCriteria", "WorkflowNotFoundError",
                                           "StoreTransaction"]),
    ("stabilize_redis.handlers", ["StabilizeHandler"]),
    ("stabilize_redis.handlers.base", ["StabilizeHandler"]),
    ("stabilize_redis.handlers.cancel_stage", ["CancelStageHandler"]),
    ("stabilize_redis.handlers.workflow_control", ["CancelWorkflowHandler", "ResumeStageHandler",
                                                   "PauseTaskHandler"]),
    ("stabilize_redis.resilience.config", ["HandlerConfig", "get_handler_config", "reset_handler_config"]),
    ("stabilize_redis.resilience.cancellation", ["register_token", "get_token", "cancel_task",
                                                 "unregister_token", "reset_cancellation_state",
                                                 "bind_current_token", "reset_current_token",
                                                 "current_cancellation_token"]),
])
def test_stabilize_import_paths_resolve(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(module)
    missing = [n for n in names if not hasattr(loaded, n)]
    assert not missing, f"{module} lacks {missing}"


def test_processor_config_has_stabilizes_defaults() -> None:
    from datetime import timedelta

    from stabilize_redis.queue.processor.config import QueueProcessorConfig
    from stabilize_redis.resilience.config import HandlerConfig

    config = QueueProcessorConfig()
    assert (config.max_workers, config.retry_delay, config.recover_on_start, config.recovery_interval_seconds,
            config.recovery_max_age_hours) == (10, timedelta(seconds=15), False, 0.0, 24.0)
    derived = QueueProcessorConfig.from_handler_config(HandlerConfig(max_workers=3, handler_retry_delay_seconds=2))
    assert (derived.max_workers, derived.retry_delay, derived.recover_on_start) == (3, timedelta(seconds=2), False)
