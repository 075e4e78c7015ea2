"""Quarantine: a workflow the checkpointer cannot save is set aside, never holding back others.

A workflow lands here when PostgreSQL refuses its snapshot or one of its events (a value that
passed validation but that PostgreSQL cannot store: a NUL character in a text column or in an
event, NaN/Infinity in event JSON, an integer out of range, ...; see ``is_data_error``), or when
its hash cannot be decoded into a snapshot at all (a hash written by an older version, or edited
by hand). The checkpointer then writes every other workflow of the batch (each suspect one in a
savepoint of its own: ``SnapshotStore.write_checkpoint``), logs one ERROR line per quarantined
workflow and acknowledges it through ``lua/checkpoint_ack.lua``: the reason goes into the
partition's quarantine hash (``PartitionKeys.quarantine``: workflow id -> JSON ``{"reason",
"version", "at", "stage"}``) and its dirty mark is cleared if it did not change meanwhile.

Nothing is lost: the workflow keeps running in Redis, stays unsaved (``ckpt`` < ``ver``, so
retention never evicts it) and is retried whenever a later commit marks it dirty again, or when
an operator runs ``stabilize-redis quarantine retry ID``; a successful write removes the entry.
Outages (connection errors, timeouts) are not data errors: they keep the checkpointer's backoff.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from stabilize_redis.backend.batch import pipeline
from stabilize_redis.keys import NamespaceKeys

DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,  # SQLSTATE class 22, and psycopg's own refusals (NUL in text, mixed arrays)
    psycopg.IntegrityError,  # class 23: a value the schema's constraints refuse
    psycopg.errors.ProgramLimitExceeded,  # 54000: e.g. a name too long for an index entry
    UnicodeError,  # a string psycopg cannot encode (lone surrogates)
)
"""Errors that belong to the rows being written, not to the connection: isolate, then quarantine."""

REASON_LIMIT = 500
"""Longest reason kept (characters); PostgreSQL messages can quote the whole value."""


def is_data_error(error: BaseException) -> bool:
    """True when ``error`` says the data is unacceptable (retrying it unchanged cannot help),
    False for outages and everything else."""
    return isinstance(error, DATA_ERRORS)


def describe(error: BaseException) -> str:
    """One line naming the error class, its SQLSTATE when PostgreSQL sent one, and its message."""
    sqlstate = getattr(error, "sqlstate", None)
    message = " ".join(str(error).split())
    text = f"{type(error).__name__}{f' [{sqlstate}]' if sqlstate else ''}: {message}"
    return text[:REASON_LIMIT]


def reason_json(reason: str, version: int, stage: str) -> str:
    """The quarantine hash value: ``stage`` is 'snapshot' (PostgreSQL refused the write) or
    'decode' (the hash could not be read as a snapshot)."""
    return json.dumps({"reason": reason[:REASON_LIMIT], "version": version, "stage": stage,
                       "at": int(time.time() * 1000)}, separators=(",", ":"))


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined workflow as listed by ``entries``."""

    partition: int
    workflow_id: str
    reason: str
    version: int
    stage: str
    at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"partition": self.partition, "id": self.workflow_id, "reason": self.reason,
                "version": self.version, "stage": self.stage, "at": self.at_ms}


def _entry(partition: int, wid: bytes | str, raw: bytes | str) -> QuarantineEntry:
    wid_text = wid.decode() if isinstance(wid, bytes) else wid
    try:
        data = json.loads(raw)
    except ValueError:
        data = {"reason": raw.decode(errors="replace") if isinstance(raw, bytes) else raw}
    return QuarantineEntry(partition, wid_text, str(data.get("reason", "")), int(data.get("version") or 0),
                           str(data.get("stage", "")), int(data.get("at") or 0))


def entries(client: Any, keys: NamespaceKeys) -> list[QuarantineEntry]:
    """Every quarantined workflow of the namespace, oldest first (one round trip)."""
    pipe = pipeline(client)
    parts = keys.all_partitions()
    for part in parts:
        pipe.hgetall(part.quarantine)
    found = [_entry(part.index, wid, raw) for part, hashed in zip(parts, pipe.execute(), strict=True)
             for wid, raw in hashed.items()]
    found.sort(key=lambda e: (e.at_ms, e.workflow_id))
    return found


def counts(client: Any, keys: NamespaceKeys) -> dict[int, int]:
    """Quarantined workflows per partition (one round trip): what ``status`` shows."""
    pipe = pipeline(client)
    for part in keys.all_partitions():
        pipe.hgetall(part.quarantine)  # HGETALL, not HLEN: the namespace ACL grants it already
    return {i: len(found) for i, found in enumerate(pipe.execute())}


def retry(client: Any, keys: NamespaceKeys, workflow_id: str) -> bool:
    """Mark a quarantined workflow dirty so the next checkpoint pass tries it again (its entry
    stays until a write succeeds). False when it is not quarantined or its hash is gone."""
    part = keys.for_workflow(workflow_id)
    if client.hget(part.quarantine, workflow_id) is None or not client.exists(part.workflow(workflow_id)):
        return False
    secs, micros = client.time()
    client.zadd(part.dirty, {workflow_id: int(secs) * 1000 + int(micros) // 1000}, nx=True)
    return True
