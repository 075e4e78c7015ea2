"""The trivial task for Celery and RQ in ``bench_peers.py`` (loaded by their workers).

Runs only under the peers' venv (``/tmp/peers-venv``, celery and rq installed there): the
project's own venv never imports it. The Celery app reads its broker and result backend from
``BENCH_PEERS_REDIS_URL``; RQ needs only the importable function ``noop``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

URL = os.environ.get("BENCH_PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench_peers", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


def noop(*_args: Any, **_kwargs: Any) -> None:
    """The benchmark's trivial task: does nothing, returns nothing."""
    return None


noop_task = app.task(name="noop_bench", ignore_result=False)(noop)
