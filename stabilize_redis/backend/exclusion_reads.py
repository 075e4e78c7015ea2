"""The read of a stage's exclusion state (``decisions.mutex``, ``decisions.deferred_choice``):
its mutex field and the holder's record, its deferred choice field and the group's members'
records. One HMGET, then (only when there are records not read yet) one more round trip."""

from __future__ import annotations

from dataclasses import fields

from stabilize_redis.backend.redis_backend import RedisBackend
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.decisions.deferred_choice import ChoiceState
from stabilize_redis.decisions.mutex import Guarded, MutexState
from stabilize_redis.decisions.snapshot import Snapshot
from stabilize_redis.keys import choice_field, choice_members_field, mutex_field, version_field


def read_exclusions(backend: RedisBackend, snap: Snapshot, rec: StageRecord) -> Guarded:
    """``snap`` (which read ``rec``) with ``rec``'s exclusion state; the mutex holder's record
    and, while the choice is undecided, every member's record are added to its stages. A stage
    with neither setting gets empty exclusions and no read."""
    out = Guarded(**{f.name: getattr(snap, f.name) for f in fields(Snapshot)})
    key, group = rec.stage.mutex_key, rec.stage.deferred_choice_group
    if not key and not group:
        return out
    names: list[str] = []
    if key:
        names += [mutex_field(key), version_field(mutex_field(key))]
    if group:
        names += [choice_field(group), version_field(choice_field(group)), choice_members_field(group)]
    values = backend.client.hmget(backend.part(snap.workflow_id).workflow(snap.workflow_id), names)
    wanted: list[str] = []
    if key:
        out.exclusions.mutex = MutexState.decode(key, values[0], int(values[1] or 0))
        values = values[2:]
        if out.exclusions.mutex.holder is not None:
            wanted.append(out.exclusions.mutex.holder)
    if group:
        winner = values[0].decode() if values[0] else None
        members = values[2].decode().split() if values[2] else []
        out.exclusions.choice = ChoiceState(group, int(values[1] or 0), winner, members)
        wanted += [winner] if winner is not None else members
    wanted = sorted({w for w in wanted if w not in out.stages})
    if wanted:
        out.stages.update(backend.read(snap.workflow_id, wanted).stages)
    return out
