"""Batches of commands that work on one Redis and on a Redis Cluster alike: ``pipeline(client)``.

On one Redis a batch is redis-py's pipeline: one round trip. On a cluster a pipeline may carry
no ``EVALSHA`` (redis-py's cluster pipeline refuses it) and no command may span slots, so a
batch there records the commands and runs them one by one, in order, through the cluster
client: each goes to the node owning its slot, following MOVED/ASK and refreshing the slot map
after a failover, and a script a node does not know (a promoted replica has an empty script
cache) is loaded on every master and called again when its source is known (``remember``).
The results come back as a pipeline's do: one per command, an error raised (the first, once
every command ran) or returned in place with ``raise_on_error=False``. Unlike one Redis's
pipeline, where a lost connection fails the whole batch, a node that cannot be reached fails
only its own commands (a ConnectionError in their place): the other masters' partitions go on
(promotion, heartbeats, counts).

Transactions (``transaction=True``) stay redis-py's, which on a cluster runs MULTI/EXEC on the
node owning the one slot every key must share.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

_sources_lock = threading.Lock()
_sources: dict[str, str] = {}


def remember(script: Script) -> Script:
    """Record a script's source under its SHA so a cluster batch can load it on NOSCRIPT."""
    with _sources_lock:
        _sources[script.sha] = script.script if isinstance(script.script, str) else bytes(script.script).decode()
    return script


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def pipeline(client: Any, transaction: bool = False) -> Any:
    """A batch on ``client``: its pipeline, or a ``SerialBatch`` on a cluster (see the module)."""
    if is_cluster(client) and not transaction:
        return SerialBatch(client)
    return client.pipeline(transaction=transaction)


class SerialBatch:
    """The cluster's batch: every command called on it is queued and run by ``execute``."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., SerialBatch]:
        if name.startswith("_"):
            raise AttributeError(name)
        getattr(self._client, name)  # an unknown command fails here, as on a pipeline

        def queue(*args: Any, **kwargs: Any) -> SerialBatch:
            self._calls.append((name, args, kwargs))
            return self

        return queue

    def __len__(self) -> int:
        return len(self._calls)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        calls, self._calls = self._calls, []
        results = [self._run(name, args, kwargs) for name, args, kwargs in calls]
        if raise_on_error:
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results

    def reset(self) -> None:
        self._calls = []

    def _run(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return getattr(self._client, name)(*args, **kwargs)
        except NoScriptError as e:
            source = _sources.get(str(args[0])) if name == "evalsha" and args else None
            if source is None:
                return e
            self._client.script_load(source)
            return self._retry(name, args, kwargs)
        except (RedisError, RedisClusterException) as e:  # in place of the reply
            return e

    def _retry(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return getattr(self._client, name)(*args, **kwargs)
        except (RedisError, RedisClusterException) as e:
            return e
