"""The minimal Redis ACL rule the engine needs, as data: one source of truth for the docs
(``deploy/README.md``) and the tests (``tests/security/test_acl.py``, which run workers, the
client, the operator commands, restore, recovery and retention under exactly this rule, and fail
on a command Redis refuses as on a listed command the engine no longer runs).

A user made with ``setuser_command(user, namespace)`` may run only the commands in ``COMMANDS``
(Lua scripts included: Redis checks every ``redis.call`` against the caller's ACL), only on keys
matching ``<namespace>:*`` and only on pub/sub channels matching ``<namespace>:*``. A second
namespace's user therefore cannot read, write, list or subscribe to the first's data. No command
that lists key names across namespaces (``SCAN``, ``KEYS``), flushes, or configures the server is
granted.
"""

from __future__ import annotations

import re

from stabilize_redis.keys import namespace_glob

COMMANDS: tuple[tuple[str, str], ...] = (
    # Lua: every state transition is a script (lua/). redis-py's Script calls EVALSHA and loads
    # the script after NOSCRIPT; a pipeline of scripts checks the script cache first.
    ("evalsha", "every Lua command of lua/"),
    ("script|load", "load a Lua command after NOSCRIPT (a fresh or restarted Redis)"),
    ("script|exists", "pipelines of scripts check the script cache first"),
    # Strings and keys.
    ("get", "scripts: checkpoint leases, recovery guards, trimmed markers"),
    ("set", "leases (SET NX PX) of the recovery sweep and consumer clean-up; scripts"),
    ("incr", "script: the trimmed marker of a dirty set"),
    ("pexpire", "scripts: checkpoint lease lifetimes, finished workflows' expiry (no PostgreSQL)"),
    ("persist", "script: a finished workflow that runs again keeps its keys"),
    ("pttl", "script: a finished workflow's dedup record expires with its hash"),
    ("del", "evicted workflows, released leases, purged dead letters, store.delete"),
    ("exists", "the namespace marker, store.exists; scripts"),
    ("time", "the Redis clock (scripts, dirty ages, recovery, status)"),
    # Hashes: workflows, the namespace meta, delayed payloads, checkpoint bookkeeping.
    ("hget", "single fields: partitions, stage ids, checkpoint info"),
    ("hmget", "handler reads (one HMGET per message), ancestors' outputs a task asks for, retention, recovery"),
    ("hgetall", "whole workflow hashes (recovery, checkpointer), the namespace marker"),
    ("hset", "workflow fields, checkpoint info, delayed payloads"),
    ("hsetnx", "the namespace marker"),
    ("hdel", "scripts: delivered delayed payloads, census entries"),
    ("hexists", "script: quarantined workflows are not re-marked"),
    ("hincrby", "scripts: join counters, checkpoint totals"),
    ("hlen", "status: quarantined workflows per partition"),
    ("hvals", "the checkpointer census (is any checkpointer live?)"),
    ("hscan", "recovery: the delayed payloads of a partition; a task listing its whole context (published outputs)"),
    # Streams: the queue, events, dead letters.
    ("xadd", "messages, events, dead letters"),
    ("xack", "scripts: acknowledge a processed entry"),
    ("xdel", "scripts: delete a processed or replayed entry"),
    ("xlen", "status and queue counts"),
    ("xrange", "events, dead letters, recovery"),
    ("xrevrange", "the newest event of a workflow"),
    ("xtrim", "script: archived events leave the workflow's stream"),
    ("xread", "client.wait follows a workflow's events"),
    ("xreadgroup", "workers read the ready streams"),
    ("xpending", "status, reclaim: delivered, unacknowledged entries"),
    ("xclaim", "heartbeats keep long tasks owned"),
    ("xautoclaim", "reclaim entries of dead workers"),
    ("xgroup|create", "the consumer group of every partition"),
    ("xgroup|delconsumer", "script: drop consumers of workers gone"),
    ("xinfo|consumers", "script: find idle consumers with nothing pending"),
    # Sorted sets: delayed messages, dedup record, dirty sets, workflow index.
    ("zadd", "delayed messages, dedup record, dirty marks, workflow index"),
    ("zrem", "the same sets"),
    ("zscore", "scripts: dedup and dirty checks"),
    ("zcard", "status, checkpointer, dirty bounds"),
    ("zcount", "script: dirty marks older than the age bound"),
    ("zrange", "checkpointer, recovery, delayed messages"),
    ("zrangebyscore", "due delayed messages, retention candidates"),
    ("zremrangebyscore", "script: trim the windowed dedup record"),
    ("zremrangebyrank", "script: cut a dirty set to its size bound"),
    ("zscan", "re-marking a trimmed partition's workflows"),
    # Transactions, pub/sub, replication, connections (AUTH and HELLO need no grant).
    ("multi", "small atomic writes outside scripts (delayed push, delete, restored marker)"),
    ("exec", "the same"),
    ("publish", "script: cancellation of running tasks"),
    ("subscribe", "workers follow cancellations"),
    ("wait", "submit(durability='replicas:N') waits for replicas"),
    ("select", "a URL naming a database other than 0 (redis://host:6379/N)"),
    ("ping", "store.is_healthy, idle connection health checks"),
)
"""(command or ``command|subcommand``, why the engine needs it)."""

CLUSTER_COMMANDS: tuple[tuple[str, str], ...] = (
    ("cluster|slots", "a cluster client asks any node for the slot map (at start, after MOVED)"),
    ("command", "redis-py's cluster client reads the command table once, to find each command's keys"),
)
"""Granted with ``cluster=True``: what redis-py's cluster client needs beyond ``COMMANDS``. In a
Redis Cluster ACL users are per node: run the rule on every node (``deploy/README.md``)."""

SETINFO = ("client|setinfo", "redis-py names its library on every connection (Redis 7.2+)")
"""Granted with ``setinfo=True``: Redis 7.2 added CLIENT SETINFO (7.0 rejects a rule naming it).
Refused, redis-py carries on, but every new connection adds to ACL LOG."""

_USER = re.compile(r"^[A-Za-z0-9_.@-]+$")


def command_names(setinfo: bool = False, cluster: bool = False) -> list[str]:
    """The granted commands, as ``ACL SETUSER`` spells them (lower case); ``setinfo``: with
    ``client|setinfo`` (Redis 7.2 and later); ``cluster``: with ``CLUSTER_COMMANDS``."""
    return ([name for name, _ in COMMANDS] + ([SETINFO[0]] if setinfo else [])
            + ([name for name, _ in CLUSTER_COMMANDS] if cluster else []))


def key_pattern(namespace: str) -> str:
    """``~<namespace>:*``: every key of the namespace (``stabilize_redis.keys``)."""
    return "~" + namespace_glob(namespace)


def channel_pattern(namespace: str) -> str:
    """``&<namespace>:*``: every pub/sub channel of the namespace."""
    return "&" + namespace_glob(namespace)


def acl_rules(namespace: str, password: str, *, setinfo: bool = False, cluster: bool = False) -> list[str]:
    """The ``ACL SETUSER <user>`` arguments for a user of ``namespace`` with ``password``:
    ``reset on >password ~ns:* &ns:* -@all +cmd ...`` (``reset`` first, so re-running the
    command replaces whatever the user had); ``setinfo`` and ``cluster`` as in ``command_names``."""
    if not password or any(c.isspace() for c in password):
        raise ValueError("the ACL password must be non-empty and contain no whitespace")
    if any(c.isspace() for c in namespace):
        raise ValueError(f"namespace {namespace!r} must not contain whitespace")
    return ["reset", "on", f">{password}", key_pattern(namespace), channel_pattern(namespace),
            "-@all", *(f"+{name}" for name in command_names(setinfo, cluster))]


def setuser_command(user: str, namespace: str, password: str = "<password>", *,
                    setinfo: bool = False, cluster: bool = False) -> str:
    """The ``ACL SETUSER`` line (for redis-cli or an ACL file's ``user`` line, see
    deploy/README.md); ``password`` defaults to a placeholder for documentation."""
    if not _USER.match(user):
        raise ValueError(f"ACL user name {user!r} must be letters, digits, '_', '.', '@' or '-'")
    return " ".join(["ACL", "SETUSER", user, *acl_rules(namespace, password, setinfo=setinfo, cluster=cluster)])
