"""What a handler read: the input of a decision. Plain data; the Redis backend fills it
(``RedisBackend.read`` / ``read_region``), the decisions read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.decisions.codec import StageRecord


@dataclass
class Snapshot:
    """What a handler read: the workflow meta and some stages, each with its version; the
    counters asked for with their stored thresholds (``thresholds``, absent when none is
    stored); and, for reads with downstreams, every returned stage's join counter
    (``keys.join_counter``) and its threshold in the same two dicts. ``ancestors``: for a stage
    read with its downstreams that is an OR split with conditions, its ancestors' merged outputs
    under the names its conditions use and it lacks (``decisions.flow.activated_downstreams``)."""

    workflow_id: str
    meta: dict[str, Any] | None
    meta_version: int
    stages: dict[str, StageRecord]
    counters: dict[str, int]
    processed: bool = False
    thresholds: dict[str, int] = field(default_factory=dict)
    ancestors: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.meta is not None


@dataclass
class Region(Snapshot):
    """What a reset (jump, restart) read (``RedisBackend.read_region``): the stages it changes
    and the stages around them, with each one's join and dead counters, their thresholds
    (``counters``/``thresholds`` by ``keys.join_counter``/``keys.dead_counter`` name) and its
    settled flag (``flags``: '1', 'h'; absent when not settled).

    ``target_id`` None: the target does not exist. ``scope``: the target and the stages all of
    whose upstreams are in scope (they go back to NOT_STARTED); ``backward``: the source lies
    downstream of the target (or is it), so it is reset too; ``skips``: on a forward jump, the
    stages only the source led to, which become SKIPPED."""

    target_id: str | None = None
    backward: bool = True
    scope: list[str] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)
    counted: list[str] = field(default_factory=list)
    """The stages whose counters a reset recounts: the changed ones, their direct downstreams,
    and the stages below those settled as unable to run (with their downstreams)."""
    flags: dict[str, str] = field(default_factory=dict)
    descendants: dict[str, StageRecord] = field(default_factory=dict)
    """The synthetic descendants of the stages a reset will change, when the handler read them
    (``backend.graph_reads.read_descendants``)."""
