"""Shared fixtures: real servers on free ports, started and stopped by the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Terminate, wait, and kill what does not stop within `timeout`: nothing is left running."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def start(self) -> None:
        """(Re)start on the same port, e.g. after stop() in an outage test."""
        self.proc = _spawn_redis(self.port, self.workdir)
        wait_for_port(self.port)

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()


def _spawn_redis(port: int, workdir: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def own_redis_server(prefix: str = "gw-redis-") -> Iterator[RedisServer]:
    """A redis-server of one's own on a free port (tests that stop and restart it), then cleaned up."""
    workdir = tempfile.mkdtemp(prefix=prefix)
    port = free_port()
    server = RedisServer(port=port, proc=_spawn_redis(port, workdir), workdir=workdir)
    wait_for_port(port)
    try:
        yield server
    finally:  # also when the generator is closed rather than exhausted
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port for the whole session (flush it per test if needed)."""
    yield from own_redis_server()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture(autouse=True, scope="session")
def _no_proxy_env() -> None:
    # Tests talk to loopback only; a proxy from the environment must not intercept them.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"


@dataclass
class RedisClusterNodes:
    """Six `redis-server --cluster-enabled yes` processes formed into 3 masters + 3 replicas."""

    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]]
    workdir: str

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3]) + "/0"

    def client(self, port: int) -> Any:
        import redis

        return redis.Redis(port=port, socket_timeout=2)

    def info(self, port: int) -> dict[str, str]:
        raw = self.client(port).execute_command("CLUSTER INFO")  # redis-py parses it into a dict
        return {str(k): str(v) for k, v in raw.items()}

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node reports cluster_state:ok (the completion signal of a formation or failover)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self.info(p).get("cluster_state") == "ok" for p in self.alive()):
                    return
            except OSError:
                pass
            except Exception as exc:  # redis.ConnectionError while a node loads: poll again
                if "Connection" not in type(exc).__name__:
                    raise
            time.sleep(0.05)
        raise TimeoutError(f"cluster not ok after {timeout}s: {[self.info(p) for p in self.alive()]}")

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot now."""
        import redis

        slot = int(self.client(self.alive()[0]).execute_command("CLUSTER KEYSLOT", key))
        for start, end, master, *_ in self.client(self.alive()[0]).execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise redis.RedisError(f"slot {slot} not served")

    def replica_of(self, master_port: int) -> int:
        node_id = self.client(master_port).execute_command("CLUSTER MYID").decode()
        for p in self.alive():
            role = self.client(p).execute_command("ROLE")
            if role[0] == b"slave" and int(role[2]) == master_port:
                return p
        raise LookupError(f"no replica of {master_port} ({node_id})")

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.kill()  # SIGKILL: no shutdown, no final sync to the replica
        proc.wait(10)

    def flush(self) -> None:
        for p in self.alive():
            if self.client(p).execute_command("ROLE")[0] == b"master":
                self.client(p).flushall()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(10)


def own_redis_cluster(prefix: str = "gw-cluster-") -> Iterator[RedisClusterNodes]:
    """A local Redis Cluster on free ports (3 masters, 3 replicas), then stopped and cleaned up."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.fail("redis-server / redis-cli are not installed (apt-get install -y redis-server)")
    workdir = tempfile.mkdtemp(prefix=prefix)
    # Twelve distinct ports (six nodes, six cluster buses) chosen up front: `free_port` may hand the
    # same free port out twice, and a node started on a duplicate would overwrite (and leak) another.
    chosen: list[int] = []
    while len(chosen) < 12:
        if (p := free_port()) not in chosen:
            chosen.append(p)
    ports, buses = chosen[:6], dict(zip(chosen[:6], chosen[6:], strict=True))
    procs: dict[int, subprocess.Popen[bytes]] = {}
    nodes = RedisClusterNodes(ports, procs, workdir)
    try:
        for p in ports:
            # node-timeout 3 s: a killed master is failed over within seconds, and a node that a
            # loaded machine stalls for a second is not. The bus port is chosen too (port + 10000
            # may be taken, or past 65535).
            procs[p] = subprocess.Popen(
                [binary, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{p}.conf", "--cluster-node-timeout", "3000",
                 "--cluster-require-full-coverage", "no", "--cluster-port", str(buses[p]),
                 "--save", "", "--appendonly", "no", "--dir", workdir, "--daemonize", "no",
                 "--loglevel", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in ports:
            wait_for_port(p)
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        nodes.wait_ok()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(workdir, ignore_errors=True)
