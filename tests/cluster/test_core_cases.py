"""The integration suite's core cases on a real three-master Redis Cluster, run by in-process
worker threads (``QueueProcessor.start``: one blocking reader per partition), and, to be sure
the same cases hold on one Redis, on the shared server too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster import scenarios
from tests.integration.support import make_engine


@pytest.mark.parametrize("case", sorted(scenarios.ALL))
def test_core_case_runs_to_completion_on_the_cluster(cluster_target: tuple[str, str], case: str) -> None:
    run: Callable[..., Any] = scenarios.ALL[case]
    eng = make_engine(cluster_target)
    tasks = scenarios.register(eng)
    assert eng.store.backend.cluster
    with eng.threaded(concurrency=4):
        run(eng, tasks)


def test_core_cases_run_to_completion_on_one_redis(real_target: tuple[str, str]) -> None:
    eng = make_engine(real_target)
    tasks = scenarios.register(eng)
    assert not eng.store.backend.cluster
    with eng.threaded(concurrency=4):
        for run in scenarios.ALL.values():
            run(eng, tasks)
