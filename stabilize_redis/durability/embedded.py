"""The durability thread a worker process runs beside its processor: the checkpointer when a
DSN is configured, else the dirty-set trimmer (``durability.dirty_cap``).

Importable without psycopg: when no DSN is configured the worker only learns that, once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.dirty_cap import DirtyCap, DirtyCapSettings
from stabilize_redis.durability.pg import pg_settings

if TYPE_CHECKING:
    from stabilize_redis.durability.checkpointer import Checkpointer, CheckpointSettings

log = logging.getLogger("stabilize_redis.checkpointer")


def start_in_worker(backend: RedisBackend, dsn: str | None = None, schema: str | None = None,
                    settings: CheckpointSettings | None = None,
                    dirty_cap: DirtyCapSettings | None = None) -> Checkpointer | DirtyCap | None:
    """Start the worker's checkpointer thread when a DSN is configured (argument or
    STABILIZE_POSTGRES_DSN) and return it; settings default to ``CheckpointSettings.from_env()``.

    Without a DSN, log once that the worker runs without snapshots, start a ``DirtyCap``
    (``dirty_cap``, default ``DirtyCapSettings.from_env()``) so the dirty sets stay bounded
    while no checkpointer runs anywhere, and return it (None when its interval is 0). When
    psycopg is not installed, log an error and return None. The result has ``stop()``."""
    pg = pg_settings(dsn, schema)
    if pg is None:
        cap = DirtyCap(backend, dirty_cap or DirtyCapSettings.from_env())
        bounds = cap.settings
        log.warning("no PostgreSQL DSN (--dsn / STABILIZE_POSTGRES_DSN): running without snapshots; "
                    "workflows live only in Redis%s",
                    f"; unsaved marks are kept up to {bounds.max_age:.0f}s / {bounds.max_size} per partition "
                    "while no checkpointer runs" if bounds.every > 0 else "")
        if bounds.every <= 0:
            return None
        cap.start()
        return cap
    try:
        from stabilize_redis.durability.checkpointer import Checkpointer, CheckpointSettings
        from stabilize_redis.durability.snapshots import SnapshotStore
    except ImportError as e:
        log.error("a PostgreSQL DSN is set but psycopg is missing (%s): install stabilize-redis[postgres]; "
                  "running without snapshots", e)
        return None
    store = SnapshotStore(pg.dsn, pg.schema, backend.keys.namespace)
    checkpointer = Checkpointer(backend, store, settings or CheckpointSettings.from_env())
    checkpointer.start()
    s = checkpointer.settings
    log.info("checkpointer on %s: interval %.1fs, fsync lag %.1fs, retention %.0fs, stall timeout %.0fs",
             pg.describe(), s.interval, s.fsync_lag, s.retention, s.stall_timeout)
    return checkpointer
