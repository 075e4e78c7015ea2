"""Ancestor outputs by reference: segments, published entries and the view of a stage.

stabilize gives a stage the merged outputs of all its transitive ancestors (merged in
topological order: lists concatenated without duplicates, anything else last-wins). Copying
them into every stage makes a chain's storage quadratic and its late hops slow. Here a stage
stores its own data only, and its ancestors' outputs are found when asked for:

* **Publication.** A stage that ends continuably publishes each output key into its *segment*:
  the hash field ``keys.output_field(segment, key)``, lines ``<rank>\\t<json>\\n``, one per
  publishing stage (its rank identifies it). Publishing again replaces the stage's lines, and a
  key it no longer outputs loses its line - a loop's second round never shows the first
  round's values.
* **Segments.** A stage whose only upstream has it as its only downstream *continues* that
  upstream's segment (``StageRecord.seg``): a chain is one segment, and the entries of a segment
  are the outputs of one path, in rank order. Any other stage heads a segment of its own.
* **Sources.** A segment's head names where its ancestors' outputs come from
  (``StageRecord.src``, or by default its upstreams, or its parent for a synthetic stage with no
  sibling upstream): ``["seg", segment, rank]`` - that segment's entries up to ``rank``, and its
  own sources; ``["stage", id]`` - that stage's outputs as stored now and its view, if it ended
  continuably (an upstream that did not release the stage adds nothing); ``["parent", id]`` -
  likewise whatever the parent's status (a synthetic stage sees its running parent's outputs).
* **The view** of stage X: the entries of X's segment ranked before X, plus everything its
  sources reach, each publishing stage once; a key's value is the rank-ordered merge of its
  entries (``lineage.merge_value``).

A view costs what it is asked: resolving it reads the records of the segment heads and stage
sources it reaches (one batch per level; a chain reads one), and each key asked for costs one
read of that key's field in each segment reached. Nothing is read for a key not asked for.

Pure: ``AncestorView`` is given its reads (``Reads``) by the I/O edge
(``backend.view_reads``). Lives with the decisions: the codec's ``StageRecord`` is its input..
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stabilize_redis.dag.lineage import materialize
from stabilize_redis.decisions.codec import StageRecord
from stabilize_redis.keys import OUTPUT_PREFIX, output_field
from stabilize_redis.models.status import CONTINUABLE_STATUSES

SEG = "seg"
STAGE = "stage"
PARENT = "parent"

Source = list[Any]


def rank_text(rank: float) -> str:
    """The canonical text of a rank in an entry line (the same stage always writes the same)."""
    return repr(float(rank))


def entry_line(rank: float, value: Any) -> str:
    """One published entry (JSON has no raw newline or tab outside strings' escapes)."""
    return f"{rank_text(rank)}\t{json.dumps(value, separators=(',', ':'))}\n"


def parse_entries(raw: bytes | str | None) -> list[tuple[float, str]]:
    """The ``(rank, json text)`` entries of a published field."""
    if not raw:
        return []
    text = raw.decode() if isinstance(raw, bytes) else raw
    out: list[tuple[float, str]] = []
    for line in text.split("\n"):
        if line:
            rank, _, value = line.partition("\t")
            out.append((float(rank), value))
    return out


def segment_of(rec: StageRecord) -> str:
    return rec.seg or rec.id


def continues(rec: StageRecord, up: StageRecord) -> bool:
    """Whether ``rec`` continues ``up``'s segment: ``up`` is its only upstream and ``rec`` is
    ``up``'s only downstream (so nothing else ever publishes into the segment after ``up``)."""
    return rec.up == [up.id] and up.down == [rec.id] and rec.stage.parent_stage_id == up.stage.parent_stage_id


def sources_of(head: StageRecord) -> list[Source]:
    """Where a segment head's ancestors' outputs come from: its recorded sources, else its
    upstreams, else (a synthetic stage waiting for no sibling) its parent."""
    if head.src is not None:
        return head.src
    if head.up:
        return [[STAGE, u] for u in head.up]
    if head.stage.parent_stage_id:
        return [[PARENT, head.stage.parent_stage_id]]
    return []


@dataclass
class Reads:
    """The reads a view needs, given by the I/O edge: stage records by id (missing ones left
    out) and raw hash fields by name (missing ones None); ``scan`` every published field."""

    records: Callable[[list[str]], dict[str, StageRecord]]
    fields: Callable[[list[str]], list[bytes | None]]
    scan: Callable[[], Iterable[tuple[str, bytes]]]


@dataclass
class AncestorView:
    """The ancestors' outputs of ``rec`` (module docstring), resolved on first use and cached."""

    rec: StageRecord
    reads: Reads
    _cuts: dict[str, tuple[float, bool]] | None = None
    _live: dict[float, Mapping[str, Any]] = field(default_factory=dict)
    _values: dict[str, tuple[bool, Any]] = field(default_factory=dict)
    _all: dict[str, Any] | None = None

    def _resolve(self) -> dict[str, tuple[float, bool]]:
        if self._cuts is not None:
            return self._cuts
        cuts: dict[str, tuple[float, bool]] = {}
        known: dict[str, StageRecord] = {self.rec.id: self.rec}
        expanded: set[str] = set()
        viewed: set[str] = set()
        heads: list[str] = []
        stages: list[tuple[str, bool]] = []

        def cut(seg: str, rank: float, inclusive: bool) -> None:
            if seg not in cuts or (rank, inclusive) > cuts[seg]:
                cuts[seg] = (rank, inclusive)

        def view_of(rec: StageRecord) -> None:
            if rec.id in viewed:
                return
            viewed.add(rec.id)
            seg = segment_of(rec)
            cut(seg, rec.rank, False)
            if seg not in expanded:
                heads.append(seg)

        view_of(self.rec)
        while heads or stages:
            wanted = [i for i in {*heads, *(s for s, _ in stages)} if i not in known]
            if wanted:
                known.update(self.reads.records(wanted))
            todo_heads, heads = heads, []
            todo_stages, stages = stages, []
            for sid, always in todo_stages:
                rec = known.get(sid)
                if rec is not None and (always or rec.stage.status in CONTINUABLE_STATUSES):
                    self._live[rec.rank] = rec.stage.outputs
                    view_of(rec)
            for seg in todo_heads:
                if seg in expanded:
                    continue
                expanded.add(seg)
                head = known.get(seg)
                if head is None:
                    continue
                for source in sources_of(head):
                    if source[0] == SEG:
                        cut(source[1], float(source[2]), True)
                        if source[1] not in expanded:
                            heads.append(source[1])
                    elif source[1] not in viewed:
                        stages.append((source[1], source[0] == PARENT))
        self._cuts = cuts
        return cuts

    def _visible(self, seg: str, rank: float) -> bool:
        limit, inclusive = self._resolve()[seg]
        return rank < limit or (inclusive and rank == limit)

    def lookup(self, key: str) -> tuple[bool, Any]:
        """``(True, merged value)`` of ``key`` over the ancestors, ``(False, None)`` if none has it."""
        if self._all is not None:
            return (key in self._all, self._all.get(key))
        if key in self._values:
            return self._values[key]
        cuts = self._resolve()
        segs = list(cuts)
        entries: dict[float, Any] = {}
        for seg, raw in zip(segs, self.reads.fields([output_field(s, key) for s in segs]), strict=True):
            for rank, text in parse_entries(raw):
                if self._visible(seg, rank):
                    entries[rank] = json.loads(text)
        for rank, outputs in self._live.items():
            if key in outputs:
                entries[rank] = outputs[key]
        found = (True, _merged(entries)) if entries else (False, None)
        self._values[key] = found
        return found

    def materialize(self) -> dict[str, Any]:
        """Every ancestor output, merged (one scan of the published fields)."""
        if self._all is not None:
            return self._all
        cuts = self._resolve()
        per_key: dict[str, dict[float, Any]] = {}
        for name, raw in self.reads.scan():
            seg, _, key = name[len(OUTPUT_PREFIX):].partition(":")
            if seg not in cuts:
                continue
            for rank, text in parse_entries(raw):
                if self._visible(seg, rank):
                    per_key.setdefault(key, {})[rank] = json.loads(text)
        for rank, outputs in self._live.items():
            for key, value in outputs.items():
                per_key.setdefault(key, {})[rank] = value
        self._all = {key: _merged(entries) for key, entries in per_key.items()}
        return self._all


def _merged(entries: dict[float, Any]) -> Any:
    """The rank-ordered merge of one key's entries (``lineage.materialize``'s rule)."""
    return materialize({"": [[rank, value] for rank, value in entries.items()]})[""]


def publication(rec: StageRecord) -> list[tuple[str, str, str | None]]:
    """What writing ``rec`` publishes: ``(field, rank text, entry line or None to remove)`` for
    each output key it now has and each key it published before but no longer has; [] when its
    outputs are as last published. Updates ``rec.pub`` (the keys published). Only a stage that
    ended continuably publishes (``decisions.transition`` calls this for every stage written)."""
    outputs = rec.stage.outputs
    digest = json.dumps(outputs, sort_keys=True, separators=(",", ":"), default=str)
    if digest == rec.pubd:
        return []
    seg, rank = segment_of(rec), rank_text(rec.rank)
    ops: list[tuple[str, str, str | None]] = [(output_field(seg, k), rank, entry_line(rec.rank, v))
                                             for k, v in outputs.items()]
    ops += [(output_field(seg, k), rank, None) for k in rec.pub if k not in outputs]
    rec.pub = sorted(outputs)
    rec.pubd = digest
    return ops


__all__ = ["PARENT", "SEG", "STAGE", "AncestorView", "Reads", "continues", "entry_line", "parse_entries", "publication",
           "rank_text", "segment_of", "sources_of"]
