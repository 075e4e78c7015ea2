"""The checkpointer a worker process runs beside its processor.

Importable without psycopg: when no DSN is configured the worker only learns that, once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.durability.pg import pg_settings

if TYPE_CHECKING:
    from stabilize_redis.durability.checkpointer import Checkpointer, CheckpointSettings

log = logging.getLogger("stabilize_redis.checkpointer")


def start_in_worker(backend: RedisBackend, dsn: str | None = None, schema: str | None = None,
                    settings: CheckpointSettings | None = None) -> Checkpointer | None:
    """Start the worker's checkpointer thread when a DSN is configured (argument or
    STABILIZE_POSTGRES_DSN) and return it. Without a DSN, log once that the worker runs without
    snapshots and return None; likewise (with an error) when psycopg is not installed. Settings
    default to ``CheckpointSettings.from_env()``."""
    pg = pg_settings(dsn, schema)
    if pg is None:
        log.warning("no PostgreSQL DSN (--dsn / STABILIZE_POSTGRES_DSN): running without snapshots; "
                    "workflows live only in Redis")
        return None
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
    log.info("checkpointer on %s: interval %.1fs, fsync lag %.1fs, retention %.0fs", pg.describe(),
             s.interval, s.fsync_lag, s.retention)
    return checkpointer
