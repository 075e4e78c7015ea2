"""Enums that shape how a stage joins its upstreams, splits to its downstreams,
and relates to its parent when synthetic."""

from __future__ import annotations

from enum import Enum

from ulid import ULID


def new_id() -> str:
    """Return a fresh ULID as a 26-character string (ids of workflows, stages, tasks)."""
    return str(ULID())


class SyntheticStageOwner(Enum):
    """Where a synthetic stage runs relative to its parent's tasks."""

    STAGE_BEFORE = "STAGE_BEFORE"
    STAGE_AFTER = "STAGE_AFTER"


class JoinType(Enum):
    """How a stage with several upstreams decides it is ready.

    AND (WCP-3, default): all upstreams continuable.
    OR (WCP-7): only the branches a paired OR-split activated.
    MULTI_MERGE (WCP-8): any continuable upstream.
    DISCRIMINATOR (WCP-9): the first continuable upstream; later ones are ignored.
    N_OF_M (WCP-30): ``join_threshold`` continuable upstreams.
    """

    AND = "AND"
    OR = "OR"
    MULTI_MERGE = "MULTI_MERGE"
    DISCRIMINATOR = "DISCRIMINATOR"
    N_OF_M = "N_OF_M"


class SplitType(Enum):
    """How a stage activates its downstreams.

    AND (WCP-2, default): every downstream.
    OR (WCP-6): the downstreams whose ``split_conditions`` expression is truthy.
    """

    AND = "AND"
    OR = "OR"


__all__ = ["JoinType", "SplitType", "SyntheticStageOwner", "new_id"]
