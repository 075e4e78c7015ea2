"""``backend.batch.SerialBatch``, the cluster's batch: commands run in order, a command's error
(a node that cannot be reached included) stays in its own place, and a script a node does not
know is loaded and called again when its source is known."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError

from stabilize_redis.backend.batch import SerialBatch, pipeline, remember


class _Node:
    """A stand-in cluster client: keys starting ``down:`` live on a node that is gone."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.loaded: list[str] = []

    def get(self, key: str) -> bytes:
        self.calls.append(("get", key))
        if key.startswith("down:"):
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:7002. Connection refused.")
        return key.encode()

    def incr(self, key: str) -> int:
        self.calls.append(("incr", key))
        raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.calls.append(("evalsha", sha))
        if sha not in self.loaded:
            raise NoScriptError("No matching script. Please use EVAL.")
        return 1

    def script_load(self, source: str) -> str:
        self.loaded.append(hashlib.sha1(source.encode()).hexdigest())
        return self.loaded[-1]


def test_commands_run_in_order_and_an_unreachable_node_fails_only_its_own() -> None:
    node = _Node()
    batch = SerialBatch(node)  # type: ignore[arg-type]
    batch.get("a").get("down:b").incr("c").get("d")
    results = batch.execute(raise_on_error=False)
    assert [c[1] for c in node.calls] == ["a", "down:b", "c", "d"]
    assert results[0] == b"a" and results[3] == b"d"
    assert isinstance(results[1], redis.ConnectionError) and isinstance(results[2], redis.ResponseError)


def test_the_first_error_is_raised_once_every_command_ran() -> None:
    node = _Node()
    batch = SerialBatch(node)  # type: ignore[arg-type]
    batch.get("down:x").get("y")
    with pytest.raises(redis.ConnectionError):
        batch.execute()
    assert [c[1] for c in node.calls] == ["down:x", "y"]
    assert batch.execute() == []  # executed commands are gone


def test_a_script_unknown_to_a_promoted_replica_is_loaded_and_called_again() -> None:
    node = _Node()
    known = remember(redis.Redis().register_script("return 'a remembered script'"))  # no connection made
    unknown_sha = hashlib.sha1(b"return 'never remembered'").hexdigest()
    batch = SerialBatch(node)  # type: ignore[arg-type]
    batch.evalsha(known.sha, 0).evalsha(unknown_sha, 0)
    results = batch.execute(raise_on_error=False)
    assert results[0] == 1 and node.loaded == [known.sha]
    assert isinstance(results[1], NoScriptError), "a script of unknown source is not guessed"


def test_an_unknown_command_fails_when_queued_as_on_a_pipeline() -> None:
    with pytest.raises(AttributeError):
        SerialBatch(_Node()).no_such_command("x")  # type: ignore[arg-type]


def test_one_redis_keeps_its_pipeline() -> None:
    client = redis.Redis()  # no connection is made by building a pipeline
    assert isinstance(pipeline(client), redis.client.Pipeline)
