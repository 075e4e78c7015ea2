"""AncestorContext and the published-entry format (pure): what a task's ``stage.context`` does
with keys its own context lacks, and how a stage's outputs are published and replaced."""

from __future__ import annotations

import copy
import json

from stabilize_redis.context.ancestor_context import AncestorContext, hash_reads, own_context, with_view
from stabilize_redis.decisions.codec import StageRecord, decode_stage, encode_stage
from stabilize_redis.decisions.views import SEG, parse_entries, publication
from stabilize_redis.keys import output_field, stage_field
from stabilize_redis.models.stage import StageExecution
from stabilize_redis.models.status import WorkflowStatus


def record(ref: str, rank: int, outputs: dict | None = None, up: list[str] | None = None, **kw: object) -> StageRecord:
    stage = StageExecution(id=ref, ref_id=ref, type="t", name=ref, context=dict(kw.pop("context", {}) or {}),
                           outputs=dict(outputs or {}), status=WorkflowStatus.SUCCEEDED)
    return StageRecord(stage, up=list(up or []), rank=rank, **kw)  # type: ignore[arg-type]


def hash_of(*recs: StageRecord) -> dict[bytes, bytes]:
    raw: dict[bytes, bytes] = {}
    for rec in recs:
        for name, _, line in publication(rec):
            raw[name.encode()] = raw.get(name.encode(), b"") + (line or "").encode()
        raw[stage_field(rec.id).encode()] = encode_stage(rec)
    return raw


def test_own_keys_win_and_missing_keys_come_from_the_ancestors_in_rank_order() -> None:
    a = record("a", 0, {"v": "a", "tags": ["x"]})
    b = record("b", 1, {"v": "b", "tags": ["y", "x"]}, up=["a"], seg="a")
    c = record("c", 2, up=["b"], seg="a", context={"own": 1, "tags": ["z"]}, cat=["tags"])
    ctx = with_view(c, hash_reads(hash_of(a, b)))

    assert ctx["v"] == "b" and ctx.get("own") == 1 and "v" in ctx and "nope" not in ctx
    assert ctx["tags"] == ["x", "y", "z"]  # an own list at the start goes after the ancestors' lists
    assert dict(ctx) == {"v": "b", "tags": ["x", "y", "z"], "own": 1} == json.loads(json.dumps(ctx))
    ctx["tags"] = ["w"]  # written by the task: its own value wins from then on
    assert ctx["tags"] == ["w"] and own_context(ctx) == {"own": 1, "tags": ["w"]}
    assert copy.deepcopy(ctx).own() == {"own": 1, "tags": ["w"]}
    assert isinstance(copy.copy(ctx), AncestorContext)


def test_a_stage_heading_a_segment_sees_only_what_its_sources_reach() -> None:
    root = record("r", 0, {"k": "r"})
    left = record("l", 1, {"k": "l", "left": 1}, up=["r"])
    right = record("x", 2, {"k": "x", "right": 1}, up=["r"])
    join = record("j", 3, up=["l", "x"])
    only_left = record("o", 4, up=["l", "x"], src=[[SEG, "l", 1]])
    raw = hash_of(root, left, right)

    assert dict(with_view(join, hash_reads(raw))) == {"k": "x", "left": 1, "right": 1}
    assert dict(with_view(only_left, hash_reads(raw))) == {"k": "l", "left": 1}
    assert with_view(left, hash_reads(raw)).get("right") is None  # a sibling is no ancestor


def test_publishing_again_replaces_the_stage_entry_and_drops_keys_it_no_longer_outputs() -> None:
    rec = record("a", 3, {"keep": 1, "gone": 2})
    first = publication(rec)
    assert sorted(f for f, _, _ in first) == [output_field("a", "gone"), output_field("a", "keep")]
    assert publication(rec) == []  # unchanged outputs publish nothing
    rec.stage.outputs = {"keep": 5}
    again = publication(rec)
    assert (output_field("a", "gone"), "3.0", None) in again
    line = next(text for f, _, text in again if f == output_field("a", "keep"))
    assert parse_entries(line) == [(3.0, "5")]


def test_a_recount_takes_the_routing_an_or_split_decided_over_its_ancestors() -> None:
    from stabilize_redis.decisions.flow import activated_downstreams
    from stabilize_redis.decisions.reset import activates
    from stabilize_redis.models.stage import SplitType

    split = record("route", 1, up=["config"])
    split.stage.split_type = SplitType.OR
    split.stage.split_conditions = {"prod": "env == 'prod'", "dev": "env == 'dev'"}
    prod, dev = record("prod", 2, up=["route"]), record("dev", 3, up=["route"])
    split.down = [prod.id, dev.id]

    active = activated_downstreams(split, {prod.id: "prod", dev.id: "dev"}, {"env": "prod"})

    assert active == {prod.id}
    assert activates(split, prod) and not activates(split, dev)  # `env` is not in the split's own context
    assert decode_stage(encode_stage(split)).act == [prod.id]  # stored with the record
