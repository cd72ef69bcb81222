"""End-to-end fixtures: real `gateway mock` and `gateway serve` (Granian, 2 workers) processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port, stop_process, wait_for_port

API_KEY = "sk-test-e2e-key"
MASTER_KEY = "sk-test-master"


@dataclass
class Proc:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str, headers: dict[str, str] | None = None) -> Any:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        stop_process(self.proc, 15)


def start_process(args: list[str], log: Path, env: dict[str, str] | None = None,
                  ready_path: str = "/healthz", port: int | None = None) -> Proc:
    port = port or free_port()
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("GATEWAY_LOG_FORMAT", "json")
    fh = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *args, "--port", str(port)],
                            stdout=fh, stderr=subprocess.STDOUT, env=full_env)
    fh.close()  # the child holds its own descriptor
    p = Proc(port=port, proc=proc, log=log)
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(p.url + ready_path, timeout=2) as resp:
                    resp.read()
                break
            except Exception as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # a 503 while starting: its socket must not linger
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
    except Exception:
        p.stop()
        raise RuntimeError(f"process did not start: {args}\n{log.read_text()[-3000:]}") from None
    return p


def start_mock(tmp: Path, name: str, *flags: str) -> Proc:
    return start_process(["mock", "--latency-ms", "5", *flags], tmp / f"{name}.log")


def write_config(path: Path, mock: Proc, dead_port: int, slow: Proc, extra: dict[str, Any] | None = None) -> Path:
    cfg: dict[str, Any] = {
        "auth": {"enabled": True, "keys": [{"id": "team-a", "key_env": "E2E_API_KEY"}]},
        "retries": {"attempts": 1, "backoff_ms": 5},
        "store": {"embedded_path": str(path.parent / f"{path.stem}-store.db")},
        "providers": {
            "primary": {"kind": "compatible", "base_url": mock.url, "api_key_env": "E2E_UPSTREAM_KEY"},
            "claude": {"kind": "anthropic", "base_url": mock.url, "api_key_env": "E2E_UPSTREAM_KEY"},
            "openai": {"kind": "openai", "base_url": mock.url + "/v1", "api_key_env": "E2E_UPSTREAM_KEY"},
            "dead": {"kind": "compatible", "base_url": f"http://127.0.0.1:{dead_port}",
                     "timeouts": {"connect_s": 1}},
            "slow": {"kind": "compatible", "base_url": slow.url,
                     "timeouts": {"first_byte_s": 0.5, "connect_s": 1}},
        },
        "models": [
            {"name": "gpt-4o-mini", "aliases": ["fast"], "deployments": [{"provider": "primary"}]},
            {"name": "gpt-4o", "deployments": [{"provider": "openai", "model": "gpt-4o-2024-08-06"}]},
            {"name": "claude-house", "deployments": [{"provider": "claude"}]},
            {"name": "flaky", "deployments": [{"provider": "dead"}], "fallbacks": ["gpt-4o-mini"]},
            {"name": "slow", "deployments": [{"provider": "slow"}]},
        ],
    }
    if extra:
        cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def mock_upstream(e2e_dir: Path) -> Iterator[Proc]:
    p = start_mock(e2e_dir, "mock")
    yield p
    p.stop()


@pytest.fixture(scope="session")
def slow_upstream(e2e_dir: Path) -> Iterator[Proc]:
    p = start_process(["mock", "--latency-ms", "3000"], e2e_dir / "slow.log")
    yield p
    p.stop()


@pytest.fixture(scope="session")
def gateway(e2e_dir: Path, mock_upstream: Proc, slow_upstream: Proc) -> Iterator[Proc]:
    cfg = write_config(e2e_dir / "gateway.yaml", mock_upstream, free_port(), slow_upstream)
    env = {"E2E_API_KEY": API_KEY, "E2E_UPSTREAM_KEY": "sk-upstream-secret", "GATEWAY_MASTER_KEY": MASTER_KEY}
    p = start_process(["serve", "--config", str(cfg), "--workers", "2"], e2e_dir / "gateway.log", env=env,
                      ready_path="/readyz")
    yield p
    p.stop()


def mock_requests(mock: Proc) -> list[dict[str, Any]]:
    return mock.get_json("/_mock/requests")  # type: ignore[no-any-return]


def last_mock_request(mock: Proc, path_suffix: str) -> dict[str, Any]:
    for req in reversed(mock_requests(mock)):
        if req["path"].endswith(path_suffix):
            return req
    raise AssertionError(f"the mock received no request for {path_suffix}")
