"""Multi-instance configuration (WCP-12 .. WCP-15)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class MultiInstanceConfig:
    """How a stage spawns and synchronises parallel instances.

    * WCP-12: ``count > 0`` with ``sync_on_complete=False`` (no synchronisation).
    * WCP-13: fixed ``count`` with synchronisation.
    * WCP-14: count read at run time from ``context[count_from_context]``.
    * WCP-15: ``allow_dynamic`` -- instances may be added while running.

    ``join_threshold`` > 0 continues after that many instances complete;
    ``cancel_remaining`` then cancels the rest.
    """

    count: int = 0
    count_from_context: str = ""
    sync_on_complete: bool = True
    allow_dynamic: bool = False
    collection_from_context: str = ""
    join_threshold: int = 0
    cancel_remaining: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict with every field; ``from_dict(to_dict())`` round-trips."""
        return {
            "count": self.count,
            "count_from_context": self.count_from_context,
            "sync_on_complete": self.sync_on_complete,
            "allow_dynamic": self.allow_dynamic,
            "collection_from_context": self.collection_from_context,
            "join_threshold": self.join_threshold,
            "cancel_remaining": self.cancel_remaining,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MultiInstanceConfig:
        """Build from a dict; missing keys take the field defaults, unknown keys are ignored."""
        return cls(
            count=int(data.get("count", 0)),
            count_from_context=str(data.get("count_from_context", "")),
            sync_on_complete=bool(data.get("sync_on_complete", True)),
            allow_dynamic=bool(data.get("allow_dynamic", False)),
            collection_from_context=str(data.get("collection_from_context", "")),
            join_threshold=int(data.get("join_threshold", 0)),
            cancel_remaining=bool(data.get("cancel_remaining", False)),
        )


__all__ = ["MultiInstanceConfig"]
