"""The whole Redis key schema of a namespace.

Every Redis key the engine touches is built here and nowhere else.

A namespace (default ``stz``) holds ``P`` partitions, fixed when the namespace is created and
recorded in the namespace meta hash. A workflow lives in partition ``crc32(workflow_id) % P``.
Every key of a partition carries one hash tag, so that each Lua script touches keys of one
cluster slot only. Global keys (namespace meta, worker registry) carry their own tag ``{meta}``.

The partition tag depends on the namespace's key layout version, recorded in the meta hash
(``LAYOUT_FIELD``) when the namespace is created and fixed from then on:

- layout 1 (namespaces created before layouts were recorded; the field is absent): ``{p<N>}``,
  so partition N of every namespace shares one slot;
- layout 2 (every new namespace): ``{<namespace>:p<N>}``, so namespaces spread over the slots.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DEFAULT_NAMESPACE = "stz"
DEFAULT_PARTITIONS = 16
CONSUMER_GROUP = "workers"

LAYOUT_FIELD = "layout"
"""Field of the namespace meta hash: the key layout version (absent: layout 1)."""
PARTITIONS_FIELD = "partitions"
CREATED_AT_FIELD = "created_at"
LEGACY_LAYOUT = 1
CURRENT_LAYOUT = 2
KEY_LAYOUTS = (LEGACY_LAYOUT, CURRENT_LAYOUT)


class KeyLayoutError(RuntimeError):
    """A namespace's key layout is unknown to this version, or differs from the one asked for:
    building keys of another layout would put workflows where no other worker looks."""


def layout_of(namespace: str, raw: bytes | str | None) -> int:
    """The layout version of a namespace from its meta hash's ``LAYOUT_FIELD`` value (None:
    absent, a namespace created before layouts were recorded: layout 1). KeyLayoutError for a
    value this version does not know."""
    if raw is None:
        return LEGACY_LAYOUT
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if not text.isdigit() or int(text) not in KEY_LAYOUTS:
        raise KeyLayoutError(f"namespace {namespace!r} has key layout {text!r}; this version knows layouts "
                             f"{', '.join(map(str, KEY_LAYOUTS))} (upgrade stabilize-redis)")
    return int(text)


def check_layout(namespace: str, stored: int, wanted: int | None) -> int:
    """``stored``, or KeyLayoutError when ``wanted`` is given and differs."""
    if wanted is not None and wanted != stored:
        raise KeyLayoutError(
            f"namespace {namespace!r} uses key layout {stored}, but layout {wanted} was asked for; a namespace "
            "keeps the layout it was created with (mixing layouts would put keys where no worker reads): drop "
            "the key_layout setting or use a new namespace")
    return stored


def partition_of(workflow_id: str, partitions: int) -> int:
    """Partition index of a workflow: stable across processes and machines."""
    return zlib.crc32(workflow_id.encode()) % partitions


def namespace_glob(namespace: str) -> str:
    """Glob matching every key and pub/sub channel of a namespace (all start ``<namespace>:``),
    glob characters of the name escaped; the ACL rule of ``stabilize_redis.acl`` uses it."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in namespace) + ":*"


@dataclass(frozen=True)
class PartitionKeys:
    """Keys of one partition; every one shares the partition's hash tag (by ``layout``)."""

    namespace: str
    index: int
    layout: int = CURRENT_LAYOUT

    @property
    def tag(self) -> str:
        if self.layout == LEGACY_LAYOUT:
            return f"{self.namespace}:{{p{self.index}}}"
        return f"{self.namespace}:{{{self.namespace}:p{self.index}}}"

    @property
    def ready(self) -> str:
        """Stream of messages ready for delivery (one consumer group)."""
        return f"{self.tag}:ready"

    @property
    def delayed(self) -> str:
        """Sorted set of delayed message ids scored by due time (ms)."""
        return f"{self.tag}:delayed"

    @property
    def delayed_payloads(self) -> str:
        """Hash: delayed message id -> encoded message."""
        return f"{self.tag}:delayed:msg"

    @property
    def dead(self) -> str:
        """Dead-letter stream."""
        return f"{self.tag}:dead"

    @property
    def done(self) -> str:
        """Sorted set of processed message ids scored by processing time: the partition's
        *windowed* dedup record, for messages processed without a workflow in Redis (and marks of
        the store API), trimmed after ``EngineConfig.dedup_window_s`` (``lua/promote_delayed.lua``)."""
        return f"{self.tag}:done"

    def processed(self, workflow_id: str) -> str:
        """Sorted set of the message ids committed against one workflow, scored by processing
        time: the workflow's dedup record. It lives and leaves with the workflow's hash
        (``lua/evict.lua``, ``RedisWorkflowStore.delete``), so it is bounded by the workflow."""
        return f"{self.tag}:dn:{workflow_id}"

    @property
    def dirty(self) -> str:
        """Sorted set of workflow ids changed since their last checkpoint, scored by first change."""
        return f"{self.tag}:dirty"

    @property
    def dirty_trimmed(self) -> str:
        """Counter, present while marks dropped from the dirty set (no checkpointer ran) may
        belong to unsaved workflows; a checkpointer re-marks them (``durability.dirty_cap``)."""
        return f"{self.tag}:dirty:trimmed"

    @property
    def expiring(self) -> str:
        """Sorted set of finished workflow ids scored by when their keys expire (``finished_ttl``
        of ``config.MemoryPolicy``); ``lua/promote_delayed.lua`` drops due ones from the
        partition's index and dirty set."""
        return f"{self.tag}:expiring"

    @property
    def outbox(self) -> str:
        """Stream of cross-partition messages awaiting relay (unused: the outbox is the
        partition's own ready stream, whose RelayMessage entries the relay forwards,
        ``handlers.relay``; kept so ``clear`` and recovery still cover older deployments)."""
        return f"{self.tag}:outbox"

    def limit(self, pipeline_config_id: str) -> str:
        """Hash holding one pipeline config's concurrency limit (field ``LIMIT_STATE_FIELD``,
        versioned; ``decisions.concurrency``), in the partition of ``limit_routing_id``."""
        return f"{self.tag}:limit:{pipeline_config_id}"

    def global_mutex(self, mutex_key: str) -> str:
        """Hash holding one global mutex (field ``GLOBAL_MUTEX_STATE_FIELD``, versioned;
        ``decisions.global_mutex``), in the partition of ``global_mutex_routing_id``."""
        return f"{self.tag}:gmutex:{mutex_key}"

    @property
    def inbox(self) -> str:
        """Sorted set of the ids of messages relayed into this partition, scored by relay time
        (ms): a message forwarded twice is enqueued once (``lua/relay_deliver.lua``)."""
        return f"{self.tag}:inbox"

    @property
    def workflows(self) -> str:
        """Sorted set of the partition's workflow ids scored by submit time (ms)."""
        return f"{self.tag}:wfs"

    @property
    def checkpoint_lease(self) -> str:
        """String: token of the checkpointer that currently drains this partition (SET NX PX)."""
        return f"{self.tag}:ckpt:lease"

    @property
    def checkpoint_info(self) -> str:
        """Hash: ``at`` (ms of the last checkpoint batch written), ``by`` (its owner token),
        ``workflows`` (running total of snapshots written to Postgres)."""
        return f"{self.tag}:ckpt:info"

    @property
    def life(self) -> str:
        """Hash: ``epoch`` (``LIFE_EPOCH_FIELD``), the partition's checkpoint epoch as last
        raised by a checkpointer (``durability.epochs``; PostgreSQL holds the authoritative one)."""
        return f"{self.tag}:ckpt:life"

    @property
    def quarantine(self) -> str:
        """Hash: workflow id -> JSON {reason, version, at, ...} of a workflow PostgreSQL refused
        (or whose hash cannot be decoded); it stays unsaved until it changes again
        (``durability.quarantine``)."""
        return f"{self.tag}:ckpt:quarantine"

    def workflow(self, workflow_id: str) -> str:
        """Hash holding one workflow: meta, per-stage blobs, versions, counters."""
        return f"{self.tag}:wf:{workflow_id}"

    def events(self, workflow_id: str) -> str:
        """Stream of one workflow's audit events."""
        return f"{self.tag}:ev:{workflow_id}"

    def recovered(self, workflow_id: str) -> str:
        """String (with a TTL): the workflow version recovery messages were last pushed for,
        so two recoveries of one state cannot both push (``lua/recover_workflow.lua``)."""
        return f"{self.tag}:rcv:{workflow_id}"


@dataclass(frozen=True)
class NamespaceKeys:
    """Global keys of a namespace and the factory of its partitions' keys (of ``layout``)."""

    namespace: str
    partitions: int
    layout: int = CURRENT_LAYOUT

    @property
    def meta(self) -> str:
        """Hash: partitions, created_at, layout (``LAYOUT_FIELD``). Its presence marks a live
        namespace. The same key in every layout: it is where the layout is read."""
        return f"{self.namespace}:{{meta}}"

    @property
    def workers(self) -> str:
        """Hash: worker id -> last heartbeat (ms)."""
        return f"{self.namespace}:{{meta}}:workers"

    @property
    def checkpointers(self) -> str:
        """Hash: checkpointer owner token -> last seen (ms, server clock); how many share the
        partitions' leases (``lua/checkpoint_census.lua``)."""
        return f"{self.namespace}:{{meta}}:checkpointers"

    @property
    def recovery_lease(self) -> str:
        """String (SET NX PX): held by the worker running the periodic stalled-workflow sweep."""
        return f"{self.namespace}:{{meta}}:recovery:lease"

    @property
    def consumer_cleanup_lease(self) -> str:
        """String (SET NX PX): held by the worker deleting idle, empty consumers of the
        partitions' groups (``lua/delete_consumers.lua``), so one worker at a time does it."""
        return f"{self.namespace}:{{meta}}:consumers:lease"

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel carrying ids of tasks whose stage was canceled (cooperative tokens)."""
        return f"{self.namespace}:{{meta}}:cancel"

    def partition(self, index: int) -> PartitionKeys:
        return PartitionKeys(self.namespace, index, self.layout)

    def for_workflow(self, workflow_id: str) -> PartitionKeys:
        return PartitionKeys(self.namespace, partition_of(workflow_id, self.partitions), self.layout)

    def all_partitions(self) -> list[PartitionKeys]:
        return [PartitionKeys(self.namespace, i, self.layout) for i in range(self.partitions)]


# Fields of a workflow hash. Versions live beside the blobs as ``v:<field>``.
GLOBAL_MUTEX_STATE_FIELD = "lock"  # a global mutex hash's record: JSON {holder, holder_fence, waiters, fence}
LIMIT_STATE_FIELD = "limit"  # a limit hash's record: JSON {max, holders, waiters}


def limit_routing_id(pipeline_config_id: str) -> str:
    """The id messages to a pipeline config's limit carry as their workflow id: it routes them to
    the partition that holds the limit (``PartitionKeys.limit``)."""
    return f"~limit:{pipeline_config_id}"


def global_mutex_routing_id(mutex_key: str) -> str:
    """The id messages to a global mutex carry as their workflow id (``PartitionKeys.global_mutex``)."""
    return f"~mutex:{mutex_key}"


META_FIELD = "meta"
STATUS_FIELD = "st"  # the workflow status name, plain, for scripts and the checkpointer
WORKFLOW_VERSION_FIELD = "ver"  # bumped by every commit that writes
STAGE_IDS_FIELD = "stages"
# Checkpointer bookkeeping in the workflow hash (not part of a snapshot): the workflow version
# last written to Postgres and the id of the last event-stream entry archived there.
CHECKPOINT_VERSION_FIELD = "ckpt"
CHECKPOINT_EVENT_FIELD = "ckpt_ev"
# Field of a partition's life hash (``PartitionKeys.life``).
LIFE_EPOCH_FIELD = "epoch"
# Field of an event-stream entry holding the event's JSON text.
EVENT_FIELD = "e"
# Fields of a ready or dead-letter stream entry: the message id and its encoded payload; a
# dead letter also has why, after how many deliveries, the last error and when (ms).
ENTRY_ID_FIELD = "id"
ENTRY_PAYLOAD_FIELD = "m"
ENTRY_ID_BYTES = ENTRY_ID_FIELD.encode()
ENTRY_PAYLOAD_BYTES = ENTRY_PAYLOAD_FIELD.encode()
DEAD_REASON_FIELD = "reason"
DEAD_ATTEMPTS_FIELD = "attempts"
DEAD_ERROR_FIELD = "error"
DEAD_AT_FIELD = "at"
# Fields of a partition's checkpoint info hash (``PartitionKeys.checkpoint_info``).
CKPT_INFO_AT_FIELD = "at"
CKPT_INFO_BY_FIELD = "by"
CKPT_INFO_WORKFLOWS_FIELD = "workflows"
# Prefixes of per-stage fields of a workflow hash (see the functions below).
VERSION_PREFIX = "v:"
STAGE_PREFIX = "s:"
UPSTREAMS_PREFIX = "u:"
DOWNSTREAMS_PREFIX = "d:"


def stage_field(stage_id: str) -> str:
    return f"{STAGE_PREFIX}{stage_id}"


def upstreams_field(stage_id: str) -> str:
    """Plain, space-separated ids of a stage's direct upstream stages (read by Lua)."""
    return f"{UPSTREAMS_PREFIX}{stage_id}"


def downstreams_field(stage_id: str) -> str:
    """Plain, space-separated ids of a stage's direct downstream stages (read by Lua)."""
    return f"{DOWNSTREAMS_PREFIX}{stage_id}"


def version_field(field: str) -> str:
    return f"{VERSION_PREFIX}{field}"


def counter_field(name: str) -> str:
    return f"c:{name}"


def threshold_field(name: str) -> str:
    """Plain integer stored beside counter ``name``: the value whose reaching releases the
    counter's message (set at layout, replaced only by a commit's reset step)."""
    return f"t:{name}"


def join_counter(stage_id: str) -> str:
    """Counter name: upstream completions that count toward a stage's join."""
    return f"j:{stage_id}"


def dead_counter(stage_id: str) -> str:
    """Counter name: upstreams of a stage that halted or can never run; at its threshold
    (upstreams - join gate + 1) the stage can never start."""
    return f"k:{stage_id}"


SETTLED_COUNTER = "settled"
"""Counter name: top-level stages settled (final status, or never able to run); its threshold
is the number of top-level stages, and reaching it releases CompleteWorkflow."""
HALTED_COUNTER = "halted"
"""Counter name: top-level stages settled by a halt (TERMINAL, STOPPED, CANCELED) or by being
unable to run."""
SETTLE_COUNTERS = (SETTLED_COUNTER, HALTED_COUNTER)
"""Counters a handler that may finish a top-level stage reads (with the settled threshold), so
the last one can complete the workflow in its own commit."""
COMPLETION_FIELD = "cw"
"""Plain flag: set (HSETNX) by the commit that released the workflow's CompleteWorkflow, so it
is released once; a reset deletes it."""


def settled_flag_field(stage_id: str) -> str:
    """Plain flag, set (HSETNX) when a top-level stage is counted settled: '1' continuable,
    'h' halted or unable to run. A stage is counted at most once; a reset deletes it."""
    return f"z:{stage_id}"


SIGNAL_BUFFER_PREFIX = "g:"


def signal_buffer_field(stage_id: str) -> str:
    """Versioned: the persistent signals buffered for a stage that was not SUSPENDED when they
    arrived (msgpack list of ``{"signal_name", "signal_data"}``, oldest first), consumed by the
    commit that suspends the stage (``handlers.signal_stage``). Never deleted, only rewritten,
    so its version only grows."""
    return f"{SIGNAL_BUFFER_PREFIX}{stage_id}"


def ref_field(ref_id: str) -> str:
    """Plain: the id of the top-level stage with this ref id (the first, if several), for
    lookups by ref id in Lua (``lua/read_region.lua``); written at layout and by add_stage."""
    return f"r:{ref_id}"


def mutex_field(mutex_key: str) -> str:
    """Versioned: the state of one mutex of a workflow (``decisions.mutex``: its holder, the run
    of the holder that took it, the waiting stages in arrival order). Absent: free, no waiters."""
    return f"mx:{mutex_key}"


def choice_field(group: str) -> str:
    """Versioned: the id of the stage that won deferred choice ``group`` (``decisions.deferred_choice``).
    Absent: not decided yet."""
    return f"dc:{group}"


def choice_members_field(group: str) -> str:
    """Plain, space-separated ids of the top-level stages of deferred choice ``group``, written
    at layout: the siblings its winner's commit cancels."""
    return f"dm:{group}"


def region_field(region: str) -> str:
    """Plain, space-separated ids of the stages tagged with ``cancel_region`` ``region``, written
    at layout: what CancelRegion reads (``handlers.cancel_region``), O(region)."""
    return f"cr:{region}"


LUA_NAMES: dict[str, str] = {
    "meta": META_FIELD, "status": STATUS_FIELD, "ver": WORKFLOW_VERSION_FIELD, "ckpt": CHECKPOINT_VERSION_FIELD,
    "ckpt_ev": CHECKPOINT_EVENT_FIELD, "epoch": LIFE_EPOCH_FIELD, "event": EVENT_FIELD, "entry_id": ENTRY_ID_FIELD,
    "payload": ENTRY_PAYLOAD_FIELD, "dead_reason": DEAD_REASON_FIELD, "dead_attempts": DEAD_ATTEMPTS_FIELD,
    "dead_error": DEAD_ERROR_FIELD, "dead_at": DEAD_AT_FIELD, "info_at": CKPT_INFO_AT_FIELD,
    "info_by": CKPT_INFO_BY_FIELD, "info_workflows": CKPT_INFO_WORKFLOWS_FIELD, "v": VERSION_PREFIX,
    "s": STAGE_PREFIX, "u": UPSTREAMS_PREFIX, "d": DOWNSTREAMS_PREFIX, "r": ref_field(""),
    "join_c": counter_field(join_counter("")), "join_t": threshold_field(join_counter("")),
    "dead_c": counter_field(dead_counter("")), "dead_t": threshold_field(dead_counter("")),
    "settled_flag": settled_flag_field(""),
}
"""The names Lua uses, as ``K.<name>`` (``lua_names``): every field and prefix a script spells."""


def lua_names() -> str:
    """The Lua include ``--@include keys``: ``local K = {...}`` built from ``LUA_NAMES``, so the
    scripts spell no field name of their own."""
    body = ", ".join(f"{name} = '{value}'" for name, value in LUA_NAMES.items())
    return f"-- generated from stabilize_redis/keys.py (LUA_NAMES)\nlocal K = {{{body}}}\n"


OUTPUT_PREFIX = "o:"


def output_field(segment: str, key: str) -> str:
    """Plain lines ``<rank>\\t<json>\\n``: output ``key`` as published by each stage of
    ``segment`` (``decisions.views``)."""
    return f"{OUTPUT_PREFIX}{segment}:{key}"
