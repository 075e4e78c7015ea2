"""``rediss://`` against a local TLS redis-server (a throw-away CA made with ``openssl``): the
client and a worker process verify the server with ``ssl_ca_certs`` and run workflows; a server
certificate from another CA is refused with a clear error; ``ssl_cert_reqs=none`` works but
logs one loud warning per process; TLS settings on a plain ``redis://`` URL are refused."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from stabilize_redis import WorkflowStatus, connect
from tests.conftest import free_port
from tests.security.support import cli_env, diamond, run_cli, start_worker, stop_worker

WARNING = "INSECURE TLS"


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl is not installed; the TLS tests need it to make certificates")
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA (``<name>.crt``/``<name>.key``) valid for a day."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)
    return directory / f"{name}.crt"


def make_server_cert(directory: Path, ca: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost signed by ``ca``: (cert, key)."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.crt", cwd=directory)
    return directory / "server.crt", directory / "server.key"


@dataclass
class TlsServer:
    port: int
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # a CA that did not

    def url(self, query: str) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?{query}"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory, "ca")
    other = make_ca(directory, "other")
    cert, key = make_server_cert(directory, "ca")
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; the TLS tests need a real Redis")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = TlsServer(port, ca, other)
    try:
        _wait_until_it_answers(server, proc)
        yield server
    finally:
        proc.kill()
        proc.wait()


def _wait_until_it_answers(server: TlsServer, proc: subprocess.Popen[bytes]) -> None:
    probe = redis.Redis.from_url(server.url(f"ssl_ca_certs={server.ca}"), socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            if probe.ping():
                break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"TLS redis-server on port {server.port} did not start (built without TLS?)") from None
            time.sleep(0.05)
    probe.close()


@pytest.mark.slow
def test_client_and_worker_run_a_workflow_over_tls_verified_by_the_ca(tls_server: TlsServer, namespace: str,
                                                                       tmp_path: Path) -> None:
    url = tls_server.url(f"ssl_ca_certs={tls_server.ca}")
    log = tmp_path / "worker.log"
    worker = start_worker(cli_env(url, namespace), log, "--log-level", "INFO")
    try:
        client = connect(url, namespace, dsn="")
        wf = diamond()
        client.submit(wf)
        assert client.wait(wf.id, timeout=60).status == WorkflowStatus.SUCCEEDED
        status = run_cli("status", env=cli_env(url, namespace))
        assert status.returncode == 0 and '"marker": "present"' in status.stdout, status.stderr
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-2000:]
    assert WARNING not in log.read_text()


@pytest.mark.parametrize("query", ["ssl_ca_certs={other}", ""], ids=["another CA", "system CAs"])
def test_a_server_the_ca_did_not_sign_is_refused_clearly(tls_server: TlsServer, namespace: str, query: str) -> None:
    url = tls_server.url(query.format(other=tls_server.other_ca))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        connect(url, namespace, dsn="")


@pytest.mark.slow
def test_ssl_cert_reqs_none_works_but_warns_loudly_once_per_process(tls_server: TlsServer, namespace: str,
                                                                     tmp_path: Path) -> None:
    insecure = tls_server.url("ssl_cert_reqs=none")
    log = tmp_path / "worker.log"
    worker = start_worker(cli_env(insecure, namespace), log, "--log-level", "INFO")
    try:
        client = connect(tls_server.url(f"ssl_ca_certs={tls_server.ca}"), namespace, dsn="")
        wf = diamond()
        client.submit(wf)
        assert client.wait(wf.id, timeout=60).status == WorkflowStatus.SUCCEEDED
        status = run_cli("status", env=cli_env(insecure, namespace))
    finally:
        assert stop_worker(worker) == 0, log.read_text()[-2000:]
    worker_lines = [line for line in log.read_text().splitlines() if WARNING in line]
    assert len(worker_lines) == 1, worker_lines
    assert "WARNING" in worker_lines[0] and "NOT verified" in worker_lines[0] and "impersonate" in worker_lines[0]
    assert "ssl_ca_certs" in worker_lines[0], "the warning says what to do instead"
    assert status.returncode == 0
    assert status.stderr.count(WARNING) == 1 and WARNING not in status.stdout


def test_tls_settings_on_a_plain_redis_url_are_refused_with_a_clear_error(namespace: str) -> None:
    with pytest.raises(ValueError, match=r"ssl_ca_certs, ssl_cert_reqs .*use a rediss:// URL") as refused:
        connect("redis://app:hunter2@127.0.0.1:6379/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem",
                namespace, dsn="")
    assert "hunter2" not in str(refused.value)
