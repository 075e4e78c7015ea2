"""Is a stage ready to start, given its upstreams' statuses? Pure decision, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from stabilize_redis.models.stage import JoinType
from stabilize_redis.models.status import CONTINUABLE_STATUSES, HALT_STATUSES, WorkflowStatus


class PredicatePhase(Enum):
    READY = "READY"
    NOT_READY = "NOT_READY"
    SKIP = "SKIP"
    UNDEFINED = "UNDEFINED"


def evaluate_readiness(join_type: JoinType, upstream: Sequence[WorkflowStatus], threshold: int = 0) -> PredicatePhase:
    """stabilize's readiness rules by join type.

    AND (and OR without activation info): any halted upstream -> SKIP; all continuable -> READY.
    MULTI_MERGE / DISCRIMINATOR: the first continuable upstream -> READY; all halted -> SKIP.
    N_OF_M: ``threshold`` continuable -> READY; SKIP once the threshold cannot be reached.
    No upstreams -> READY.
    """
    if not upstream:
        return PredicatePhase.READY
    ok = sum(1 for s in upstream if s in CONTINUABLE_STATUSES)
    halted = sum(1 for s in upstream if s in HALT_STATUSES)
    if join_type in (JoinType.DISCRIMINATOR, JoinType.MULTI_MERGE):
        if ok >= 1:
            return PredicatePhase.READY
        return PredicatePhase.SKIP if halted == len(upstream) else PredicatePhase.NOT_READY
    if join_type == JoinType.N_OF_M and threshold > 0:
        need = min(threshold, len(upstream))
        if ok >= need:
            return PredicatePhase.READY
        if len(upstream) - halted < need:
            return PredicatePhase.SKIP
        return PredicatePhase.NOT_READY
    if halted:
        return PredicatePhase.SKIP
    return PredicatePhase.READY if ok == len(upstream) else PredicatePhase.NOT_READY
