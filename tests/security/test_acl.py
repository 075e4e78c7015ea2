"""The whole engine runs as a Redis ACL user holding only the rule of ``stabilize_redis.acl``
(every granted command used, none denied), and a second namespace's user can neither read,
write, list nor subscribe to the first namespace's data. The rule in deploy/README.md is the
rendered one."""

from __future__ import annotations

import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from stabilize_redis import (
    Client,
    Orchestrator,
    RedisQueue,
    RedisWorkflowStore,
    Workflow,
    WorkflowStatus,
    connect,
)
from stabilize_redis.acl import COMMANDS, acl_rules, command_names, setuser_command
from stabilize_redis.durable_submit import SubmitNotDurable
from stabilize_redis.keys import STATUS_FIELD, NamespaceKeys, PartitionKeys
from stabilize_redis.queue.messages import StartWorkflow
from tests.conftest import free_port, start_private_redis
from tests.integration.support import wait_until
from tests.security.support import ROOT, cli_env, diamond, run_cli, stage, start_worker, stop_worker

DB = 1  # not 0, so that the SELECT a URL's database needs is exercised too


@dataclass
class AclServer:
    """A private redis-server whose default user is the test's operator (``admin``: it uses
    only commands no engine user is granted), with one ACL user per namespace (``users``:
    user -> (namespace, password))."""

    port: int
    admin: redis.Redis
    users: dict[str, tuple[str, str]] = field(repr=False)

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.users[user][1]}@127.0.0.1:{self.port}/{DB}"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user))

    def denied(self, user: str) -> list[dict[str, Any]]:
        """ACL LOG entries of ``user``: commands, keys or channels it was refused."""
        return [e for e in self.admin.acl_log(count=1000) if _text(e.get("username")) == user]

    def executed(self) -> set[str]:
        """Commands (``cmd`` or ``cmd|sub``) the server executed at least once since the stats
        were reset, scripts' ``redis.call`` included."""
        stats = self.admin.info("commandstats")
        return {name.removeprefix("cmdstat_") for name, row in stats.items() if int(row.get("calls", 0)) > 0}

    def known(self, command: str) -> bool:
        """Whether this Redis version has ``command`` (``client|setinfo`` is 7.2+)."""
        conn = self.admin.connection
        assert conn is not None
        conn.send_command("COMMAND", "INFO", command)  # raw: redis-py's parser fails on a nil
        return conn.read_response() != [None]

    def delete_namespace(self, namespace: str) -> None:
        """Lose a namespace's Redis data (UNLINK, which no engine user is granted, so the
        command statistics stay the engine's)."""
        keys = list(self.admin.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            self.admin.unlink(*keys)


def _version(admin: redis.Redis) -> tuple[int, ...]:
    return tuple(int(p) for p in str(admin.info("server")["redis_version"]).split(".")[:2])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture
def acl_server() -> Iterator[AclServer]:
    port = free_port()
    proc = start_private_redis(port)
    # One connection, opened before the statistics are reset: its SELECT is not counted.
    admin = redis.Redis(host="127.0.0.1", port=port, db=DB, single_connection_client=True)
    suffix = uuid.uuid4().hex[:8]
    users = {"stz-a": (f"nsa{suffix}", secrets.token_hex(16)), "stz-b": (f"nsb{suffix}", secrets.token_hex(16))}
    try:
        setinfo = _version(admin) >= (7, 2)
        for user, (namespace, password) in users.items():
            assert admin.execute_command(*setuser_command(user, namespace, password, setinfo=setinfo).split())
        admin.acl_log_reset()
        admin.config_resetstat()
        yield AclServer(port, admin, users)
    finally:
        proc.kill()
        proc.wait()


def test_rule_is_reset_then_namespace_patterns_then_only_the_listed_commands() -> None:
    rules = acl_rules("stz", "pw")
    assert rules[:6] == ["reset", "on", ">pw", "~stz:*", "&stz:*", "-@all"]
    assert rules[6:] == [f"+{c}" for c in command_names()] and len(set(rules[6:])) == len(COMMANDS)
    assert acl_rules("a*b", "pw")[3:5] == [r"~a\*b:*", r"&a\*b:*"], "glob characters are escaped"
    with pytest.raises(ValueError, match="whitespace"):
        acl_rules("stz", "pass word")


def test_deploy_readme_shows_the_rendered_rule() -> None:
    text = (ROOT / "deploy" / "README.md").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("ACL SETUSER")]
    assert lines == [setuser_command("stz-worker", "stz")], "deploy/README.md must show acl.setuser_command"
    block = text.split("Why each command is granted", 1)[1].split("\n\n", 2)[1]
    listed = block.splitlines()
    assert listed == [f"- `{name}`: {why}" for name, why in COMMANDS], "deploy/README.md lists acl.COMMANDS"


@dataclass
class Run:
    """One namespace user's view: its client, raw connection, CLI environment and worker log."""

    server: AclServer
    user: str
    namespace: str
    client: Client
    env: dict[str, str] = field(repr=False)
    log: Path = field(repr=False)

    def worker(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return start_worker(env or self.env, self.log, "--visibility-timeout", "1.5", "--grace-period", "5",
                            "--interval", "0.1", "--retention", "1", "--log-level", "INFO")

    def stop(self, worker: subprocess.Popen[bytes]) -> None:
        assert stop_worker(worker) == 0, self.log.read_text()[-3000:]

    def gone(self, workflow_id: str) -> bool:
        """Whether the workflow's hash left Redis (TYPE: a command the engine is not granted)."""
        return self.server.admin.type(self.client.backend.part(workflow_id).workflow(workflow_id)) == b"none"


@pytest.mark.slow
def test_the_whole_engine_runs_under_the_namespace_user(acl_server: AclServer, pg_dsn: str, pg_schema: str,
                                                        tmp_path: Path) -> None:
    user = "stz-a"
    ns, password = acl_server.users[user]
    url = acl_server.url(user)
    env = cli_env(url, ns, STABILIZE_POSTGRES_DSN=pg_dsn, STABILIZE_POSTGRES_SCHEMA=pg_schema,
                  STABILIZE_RECOVERY_INTERVAL="0.5", STABILIZE_RECOVERY_AGE="0.5",
                  STABILIZE_MARKER_CHECK_INTERVAL="0.5")
    run = Run(acl_server, user, ns, connect(url, ns, dsn=pg_dsn, schema=pg_schema), env, tmp_path / "worker.log")

    untracked = _without_postgres_the_dirty_marks_are_trimmed(run)
    _workers_client_and_operators(run, untracked)
    _restore_and_stalled_recovery(run)

    output = run.log.read_text()
    assert "NOPERM" not in output and password not in output
    assert acl_server.denied(user) == [], "the engine ran a command, key or channel the rule does not grant"
    unused = [c for c in command_names(setinfo=True) if acl_server.known(c) and c not in acl_server.executed()]
    assert unused == [], f"granted but never used: {unused}"


def _without_postgres_the_dirty_marks_are_trimmed(run: Run) -> Workflow:
    """A worker without a DSN (and no checkpointer ever seen) trims the dirty sets; returns the
    workflow whose mark it dropped."""
    env = {k: v for k, v in run.env.items() if not k.startswith("STABILIZE_POSTGRES")}
    env.update(STABILIZE_DIRTY_TRIM_INTERVAL="0.2", STABILIZE_DIRTY_MAX_AGE="0.001", STABILIZE_DIRTY_MAX_SIZE="0")
    worker = run.worker(env)
    try:
        wf = diamond("untracked")
        run.client.submit(wf)
        assert run.client.wait(wf.id, timeout=60).status == WorkflowStatus.SUCCEEDED
        dirty = run.client.backend.part(wf.id).dirty
        wait_until(lambda: run.server.admin.type(dirty) == b"none", 30, "the dirty mark to be trimmed")
        # Without PostgreSQL a finished workflow expires (STABILIZE_FINISHED_TTL_S); running
        # it again takes the expiry off (PERSIST) until it finishes again.
        run.client.restart(wf.id, "d")
        wait_until(lambda: len([e for e in run.client.events(wf.id) if e["event_type"] == "workflow.completed"]) == 2,
                   60, "the restarted workflow to finish again")
        assert run.server.admin.pttl(run.client.backend.part(wf.id).workflow(wf.id)) > 0
    finally:
        run.stop(worker)
    return wf


def _workers_client_and_operators(run: Run, untracked: Workflow) -> None:
    client, admin, env = run.client, run.server.admin, run.env
    worker = run.worker()
    try:
        # Workers run workflows to the end; the client submits, waits and reads.
        flows = [diamond(f"d{i}") for i in range(6)]
        for wf in flows:
            client.submit(wf)
        for wf in flows:
            assert client.wait(wf.id, timeout=60).status == WorkflowStatus.SUCCEEDED
        assert client.get(flows[0].id).stage_by_ref_id("d") is not None
        replicated = diamond("replicated")
        with pytest.raises(SubmitNotDurable, match="0 of 1 replicas"):
            client.submit(replicated, durability="replicas:1", durability_timeout=0.1)
        assert client.wait(replicated.id, timeout=60).status == WorkflowStatus.SUCCEEDED

        # The stabilize API: store + Orchestrator, a delayed push, health, listing, delete.
        store = RedisWorkflowStore(run.server.url(run.user), run.namespace, dsn=env["STABILIZE_POSTGRES_DSN"],
                                   schema=env["STABILIZE_POSTGRES_SCHEMA"])
        queue = RedisQueue(run.server.url(run.user), run.namespace)
        orchestrated, delayed = diamond("orchestrated"), diamond("delayed")
        Orchestrator(queue, store=store).start(orchestrated)
        store.store(delayed)
        queue.push(StartWorkflow(execution_id=delayed.id, execution_type=delayed.type.name), delay=0.2)
        for wf in (orchestrated, delayed):
            assert client.wait(wf.id, timeout=60).status == WorkflowStatus.SUCCEEDED
        assert store.is_healthy() and store.events(delayed.id)
        assert {orchestrated.id, delayed.id}.isdisjoint(w.id for w in store.get_all_pending_workflows())
        store.delete(delayed.id)
        assert not store.exists(delayed.id)

        # Cancellation reaches a running task (PUBLISH in a script, the worker's SUBSCRIBE), and
        # the long task is heartbeated meanwhile.
        long = client.submit(Workflow.create(application="security", name="cancel",
                                             stages=[stage("wait", task="wait_for_cancel")]))
        cancel_key = f"{run.namespace}:test:cancel:{long}"
        wait_until(lambda: admin.hstrlen(cancel_key, "running") > 0, 30, "the cancellable task to run")
        wait_until(lambda: "xclaim" in run.server.executed(), 10, "a heartbeat of the running task")
        client.cancel(long, user="ops", reason="acl test")
        assert client.wait(long, timeout=30).status == WorkflowStatus.CANCELED
        # The workflow settles CANCELED in the cancel's own commit; the running task sees its
        # token through the cancellation channel a moment later.
        wait_until(lambda: admin.hstrlen(cancel_key, "saw_cancel") > 0, 10, "the task to see its cancellation")

        # Dead letters: list, replay, purge through the CLI.
        run.server.client(run.user).xadd(PartitionKeys(run.namespace, 0).ready, {"id": "bad", "m": "not json"})
        wait_until(lambda: client.queue.dlq_size() == 1, 30, "the bad entry to be dead-lettered")
        listed = run_cli("dlq", "list", env=env)
        assert listed.returncode == 0 and '"undecodable"' in listed.stdout, listed.stderr
        dead_id = client.queue.list_dlq()[0]["id"]
        replayed = run_cli("dlq", "replay", dead_id, env=env)
        assert (replayed.returncode, replayed.stdout.strip()) == (0, "replayed"), replayed.stderr
        wait_until(lambda: client.queue.dlq_size() == 1 and client.queue.list_dlq()[0]["id"] != dead_id, 30,
                   "the replayed entry to be dead-lettered again")
        purged = run_cli("dlq", "purge", env=env)
        assert (purged.returncode, purged.stdout.strip()) == (0, "purged 1 dead letters"), purged.stderr

        status = run_cli("status", env=env)
        assert status.returncode == 0 and '"marker": "present"' in status.stdout, status.stderr

        # Retention: checkpointed, finished workflows leave Redis and are read from Postgres,
        # the one whose dirty mark was trimmed included (the checkpointer re-marks it).
        for wf in (flows[0], untracked):
            wait_until(lambda wid=wf.id: run.gone(wid), 30, f"workflow {wf.name} to be evicted")
            assert client.get(wf.id).status == WorkflowStatus.SUCCEEDED
    finally:
        run.stop(worker)


def _restore_and_stalled_recovery(run: Run) -> None:
    client, env = run.client, run.env
    # Restore: an unfinished, checkpointed workflow survives the loss of the namespace's data.
    pending = diamond("restored")
    client.submit(pending)
    once = run_cli("checkpointer", "--once", env=env)
    assert once.returncode == 0 and '"written": 1' in once.stdout, once.stderr
    run.server.delete_namespace(run.namespace)
    refused = run.worker()
    assert refused.wait(60) == 3, "a worker refuses a namespace that lost its data"
    restored = run_cli("restore", env=env)
    assert restored.returncode == 0 and '"restored": 1' in restored.stdout, restored.stderr
    # And a workflow whose message was lost (an AOF window) is found by the recovery sweep.
    stalled = next(wf for wf in (diamond("stalled") for _ in range(1000))
                   if client.backend.part(wf.id).index != client.backend.part(pending.id).index)
    client.submit(stalled)
    run.server.admin.xtrim(client.backend.part(stalled.id).ready, maxlen=0, approximate=False)
    worker = run.worker()
    try:
        for wf in (pending, stalled):
            assert client.wait(wf.id, timeout=60).status == WorkflowStatus.SUCCEEDED
    finally:
        run.stop(worker)
    assert "stalled-workflow sweep" in run.log.read_text()


def test_another_namespace_user_cannot_touch_the_first_namespace(acl_server: AclServer) -> None:
    ns_a, _ = acl_server.users["stz-a"]
    client_a = connect(acl_server.url("stz-a"), ns_a, dsn="")
    wf = diamond()
    client_a.submit(wf)
    part = client_a.backend.part(wf.id)
    victim = part.workflow(wf.id)
    intruder = acl_server.client("stz-b")
    ns_b, _ = acl_server.users["stz-b"]
    connect(acl_server.url("stz-b"), ns_b, dsn="").submit(diamond())  # its own namespace works

    for attempt in (lambda: intruder.hgetall(victim), lambda: intruder.hset(victim, STATUS_FIELD, "SUCCEEDED"),
                    lambda: intruder.delete(victim), lambda: intruder.xadd(part.ready, {"id": "x", "m": "{}"}),
                    lambda: intruder.xrange(part.events(wf.id)), lambda: intruder.keys(f"{ns_a}:*"),
                    lambda: intruder.evalsha("0" * 40, 1, victim),
                    lambda: intruder.publish(NamespaceKeys(ns_a, 0).cancel_channel, "x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    with pytest.raises(redis.exceptions.NoPermissionError):
        connect(acl_server.url("stz-b"), ns_a, dsn="").get(wf.id)
    pubsub = intruder.pubsub()
    with pytest.raises(redis.exceptions.NoPermissionError):
        pubsub.subscribe(NamespaceKeys(ns_a, 0).cancel_channel)
        pubsub.get_message(timeout=1)
    pubsub.close()
    assert acl_server.admin.hget(victim, STATUS_FIELD) == b"RUNNING", "the workflow is untouched"
    reasons = {_text(e["reason"]) for e in acl_server.denied("stz-b")}
    assert reasons == {"key", "command", "channel"}
