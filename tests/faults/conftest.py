"""The fault suite's stack: real redis-server, two `gateway mock` upstreams (one can black-hole) and
`gateway serve` with two Granian workers, auth, limits, input policies and the cache on Redis.

Two forms. The short form runs in `make test` (each scenario a few seconds). `make faults` sets
GATEWAY_FAULTS=full: every scenario runs for its full duration, and the tests marked `faults_full`
(the soak, GATEWAY_SOAK_S seconds, 600) run too. `make soak` runs the soak on a stack of its own
(benchmarks/soak/run.py, SOAK_S). Each scenario records one line of
figures; they are printed at the end of the run (and appended to $GATEWAY_FAULTS_FIGURES if set).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import RedisServer, own_redis_server
from tests.e2e.conftest import Proc, start_process

from .load import children, workers_rss_kb

FULL = os.environ.get("GATEWAY_FAULTS") == "full"
API_KEY = "sk-faults-team-a"
LIMITED_KEY = "sk-faults-team-b"  # 5 requests a minute: proves limits hold
MASTER_KEY = "sk-faults-master"
HEADER_TIMEOUT_MS = 2000
MOCK_LATENCY_MS = 20

_FIGURES: list[str] = []


def form(short: float, full: float) -> float:
    """A duration (or count) for the short form in `make test` and the full one in `make faults`."""
    return full if FULL else short


def record(scenario: str, **figures: Any) -> None:
    """One line of figures for the scenario, printed at the end of the run."""
    cells = " | ".join(f"{k.replace('_', ' ')} {_fmt(v)}" for k, v in figures.items())
    _FIGURES.append(f"{scenario:<22} | {cells}")
    print(_FIGURES[-1])


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section(f"fault suite figures ({'full' if FULL else 'short'} form)")
    for line in _FIGURES:
        terminalreporter.write_line(line)
    out = os.environ.get("GATEWAY_FAULTS_FIGURES")
    if out:
        with open(out, "a") as fh:
            fh.write(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({'full' if FULL else 'short'})\n")
            fh.writelines(line + "\n" for line in _FIGURES)


@pytest.fixture(autouse=True)
def _full_form_only(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("faults_full") and not FULL:
        pytest.skip("full form only: make faults (GATEWAY_FAULTS=full)")


@dataclass
class Stack:
    gw: Proc
    mock: Proc  # the upstream of every model
    hole: Proc  # the upstream of the first deployment of `bh`; black-holes when told to
    redis: RedisServer
    tmp: Path

    @property
    def workers(self) -> list[int]:
        return children(self.gw.proc.pid)

    def rss_kb(self) -> int:
        return workers_rss_kb(self.gw.proc.pid)

    @staticmethod
    def set_mock(mock: Proc, **settings: Any) -> dict[str, Any]:
        req = urllib.request.Request(mock.url + "/_mock/settings", data=json.dumps(settings).encode(), method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    @staticmethod
    def mock_stats(mock: Proc) -> dict[str, int]:
        return mock.get_json("/_mock/stats")  # type: ignore[no-any-return]

    def readyz(self) -> dict[str, Any]:
        return self.gw.get_json("/readyz")  # type: ignore[no-any-return]


def gateway_config(tmp: Path, mock: Proc, hole: Proc, extra: dict[str, Any] | None = None) -> Path:
    cfg: dict[str, Any] = {
        "server": {"header_timeout_ms": HEADER_TIMEOUT_MS},
        "auth": {"enabled": True, "keys": [{"id": "team-a", "key_env": "FAULTS_KEY_A"},
                                           {"id": "team-b", "key_env": "FAULTS_KEY_B"}]},
        "providers": {
            "primary": {"kind": "compatible", "base_url": mock.url, "api_key_env": "FAULTS_UPSTREAM_KEY"},
            "claude": {"kind": "anthropic", "base_url": mock.url, "api_key_env": "FAULTS_UPSTREAM_KEY"},
            "hole": {"kind": "compatible", "base_url": hole.url, "api_key_env": "FAULTS_UPSTREAM_KEY",
                     "timeouts": {"connect_s": 1, "first_byte_s": 2}},
        },
        "models": [
            {"name": "gpt-4o-mini", "deployments": [{"provider": "primary"}]},
            {"name": "claude-house", "deployments": [{"provider": "claude"}]},
            {"name": "bh", "deployments": [{"provider": "hole"}], "fallbacks": ["gpt-4o-mini"]},
        ],
        # The company configuration, less the embedding model (its start-up and CPU are not what
        # these scenarios measure): limits for every key, input policies, the cache on Redis.
        "cache": {"semantic": False},
        "governance": {
            "keys": {"team-a": {"rpm": 1_000_000}, "team-b": {"rpm": 5}},
            "policies": {"*": [{"name": "pii", "kind": "pii", "action": "flag", "when": "before"},
                               {"name": "size", "kind": "max_prompt", "max_chars": 200000, "when": "before"}]},
        },
        **(extra or {}),
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_gateway(tmp: Path, mock: Proc, hole: Proc, redis_url: str, workers: int = 2,
                  extra: dict[str, Any] | None = None, name: str = "gateway",
                  environ: dict[str, str] | None = None) -> Proc:
    cfg = gateway_config(tmp, mock, hole, extra)
    env = {"FAULTS_KEY_A": API_KEY, "FAULTS_KEY_B": LIMITED_KEY, "FAULTS_UPSTREAM_KEY": "sk-upstream",
           "GATEWAY_MASTER_KEY": MASTER_KEY, "GATEWAY_REDIS_URL": redis_url, "GATEWAY_LOG_LEVEL": "warning",
           **(environ or {})}
    return start_process(["serve", "--config", str(cfg), "--workers", str(workers)], tmp / f"{name}.log", env=env,
                         ready_path="/readyz")


@pytest.fixture(scope="session")
def faults_redis() -> Iterator[RedisServer]:
    yield from own_redis_server("gw-faults-")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, faults_redis: RedisServer) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("faults")
    mock = start_process(["mock", "--latency-ms", str(MOCK_LATENCY_MS)], tmp / "mock.log")
    hole = start_process(["mock", "--latency-ms", str(MOCK_LATENCY_MS)], tmp / "hole.log")
    gw = start_gateway(tmp, mock, hole, faults_redis.url)
    yield Stack(gw, mock, hole, faults_redis, tmp)
    gw.stop()
    mock.stop()
    hole.stop()


def chat(i: int, *, cacheable: bool = False, stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A realistic chat body; unique (never a cache hit) unless `cacheable`."""
    body: dict[str, Any] = {
        "model": "gpt-4o-mini", "max_tokens": 64, "temperature": 0 if cacheable else 0.7,
        "messages": [{"role": "system", "content": "You are a terse assistant."},
                     {"role": "user", "content": f"Question {i}: what is the capital of country number {i}?"}],
        **extra,
    }
    if stream:
        body["stream"] = True
    return body


AUTH = {"authorization": f"Bearer {API_KEY}"}
