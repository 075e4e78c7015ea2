"""The benchmark's trivial task, for ``stabilize-redis worker --app tests.bench.bench_tasks:registry``."""

from __future__ import annotations

from stabilize_redis import StageExecution, Task, TaskRegistry, TaskResult

TASK_NAME = "noop_bench"  # = tests.bench.workloads.TASK_NAME


class NoopBench(Task):
    """Returns success with a tiny output at once: measures engine overhead only."""

    def execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success(outputs={"ok": True})


registry = TaskRegistry()
registry.register(TASK_NAME, NoopBench)
