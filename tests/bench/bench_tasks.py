"""The benchmark's tasks, for ``stabilize-redis worker --app tests.bench.bench_tasks:registry``."""

from __future__ import annotations

from stabilize_redis import StageExecution, Task, TaskRegistry, TaskResult
from tests.bench.workloads import LOOP_TARGET, LOOP_TASK_NAME, TASK_NAME, loop_should_jump


class NoopBench(Task):
    """Returns success with a tiny output at once: measures engine overhead only."""

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"ok": True})


class LoopBackBench(Task):
    """The LOOP workload's last stage: ``TaskResult.jump_to(LOOP_TARGET)`` until the loop has
    run ``LOOP_PASSES`` times (``workloads.loop_should_jump``), then succeeds like NoopBench."""

    def execute(self, stage: StageExecution) -> TaskResult:
        if loop_should_jump(stage.context):
            return TaskResult.jump_to(LOOP_TARGET)
        return TaskResult.success(outputs={"ok": True})


registry = TaskRegistry()
registry.register(TASK_NAME, NoopBench)
registry.register(LOOP_TASK_NAME, LoopBackBench)
