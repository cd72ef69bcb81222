"""`gateway cache clear|stats` and `/admin/cache/*` against a real gateway (Granian, 2 workers), asked
through the openai SDK: a clear stops every worker serving the cleared model, and only that model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import free_port

from .conftest import API_KEY, MASTER_KEY, Proc, start_process, write_config

QUESTION = "Which planet in the solar system has the most moons?"
ENV = {"E2E_API_KEY": API_KEY, "E2E_UPSTREAM_KEY": "sk-upstream-secret", "GATEWAY_MASTER_KEY": MASTER_KEY}


@dataclass
class Pods:
    asked: Proc  # the requests go here
    admin: Proc  # the admin calls here: another pod on Redis, the same one on the embedded store
    cfg: Path
    store: str


@pytest.fixture(scope="module", params=["embedded", "redis"])
def pods(request: pytest.FixtureRequest, e2e_dir: Path, mock_upstream: Proc, slow_upstream: Proc) -> Iterator[Pods]:
    # Phase 4 is covered by the integration tests; without the model the workers start faster.
    extra: dict[str, Any] = {"cache": {"semantic": False}}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        extra["store"] = {"redis_url": server.url}
    made: list[Proc] = []
    try:
        for name in ("a", "b") if request.param == "redis" else ("a",):
            cfg = write_config(e2e_dir / f"cacheops-{request.param}-{name}.yaml", mock_upstream, free_port(),
                               slow_upstream, extra)
            made.append(start_process(["serve", "--config", str(cfg), "--workers", "2"],
                                      e2e_dir / f"cacheops-{request.param}-{name}.log", env=ENV, ready_path="/readyz"))
        yield Pods(asked=made[0], admin=made[-1], cfg=cfg, store=request.param)
    finally:
        for p in made:
            p.stop()


def ask(gw: Proc, model: str, *, store: bool = True) -> bool:
    """One request on a new connection (so either worker may take it): was it a cache hit?"""
    headers = {} if store else {"cache-control": "no-store"}  # probes must not cache the answer again
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=20) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, temperature=0, messages=[{"role": "user", "content": QUESTION}], extra_headers=headers)
        assert raw.parse().choices[0].message.content
        return raw.headers.get("x-cache-hit") == "true"


def cached(gw: Proc, model: str) -> None:
    """The answer is cached: the write-back runs after the answer went out, so poll for the hit."""
    deadline = time.monotonic() + 20
    ask(gw, model)
    while not ask(gw, model):
        assert time.monotonic() < deadline, f"{model} never became a hit"
        time.sleep(0.05)
    assert all(ask(gw, model, store=False) for _ in range(6))  # on both workers, likely


def assert_misses_within(gw: Proc, model: str, since: float, after_s: float = 2.0) -> None:
    """Every request sent `after_s` or more after the clear is a miss: each worker reads the
    generations once a second, so one may stop serving before the other. Judged by when a request
    leaves, not when its answer comes back (a busy machine answers late)."""
    late: list[bool] = []
    while len(late) < 8:
        sent = time.monotonic() - since
        hit = ask(gw, model, store=False)
        if sent >= after_s:
            late.append(hit)
        assert sent < 30, "still serving the cleared model"
    assert late == [False] * 8, "served from the cache after the clear"


def admin(gw: Proc, method: str, path: str, body: Any = None, key: str = MASTER_KEY) -> httpx.Response:
    return httpx.request(method, gw.url + path, json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "cache", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **ENV})


def test_cli_clear_of_one_model_reaches_every_worker_and_spares_the_other(pods: Pods) -> None:
    p, cfg = pods.asked, pods.cfg
    cached(p, "gpt-4o-mini")
    cached(p, "gpt-4o")
    done = cli(cfg, "clear", "--model", "fast")  # an alias: its route, gpt-4o-mini, is cleared
    assert done.returncode == 0, done.stderr
    assert "model:gpt-4o-mini" in done.stdout and "model:fast" in done.stdout
    assert_misses_within(p, "gpt-4o-mini", time.monotonic())
    assert all(ask(p, "gpt-4o", store=False) for _ in range(6))
    cached(p, "gpt-4o-mini")  # it caches again, in its new generation


def test_admin_clear_and_stats(pods: Pods) -> None:
    p, cfg, pod = pods.asked, pods.cfg, pods.admin
    cached(p, "gpt-4o")
    cached(p, "gpt-4o-mini")
    assert admin(pod, "POST", "/admin/cache/clear", {"model": "gpt-4o"}, key="sk-wrong").status_code == 401
    bad = admin(pod, "POST", "/admin/cache/clear", {"modle": "gpt-4o"})
    assert bad.status_code == 400 and "modle" in bad.json()["error"]["message"]
    resp = admin(pod, "POST", "/admin/cache/clear", {"model": "gpt-4o"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["scopes"] == ["model:gpt-4o"] and resp.json()["deleted"] is False
    assert_misses_within(p, "gpt-4o", time.monotonic())
    assert all(ask(p, "gpt-4o-mini", store=False) for _ in range(6))

    # Stats: the pod's two workers (their metric files are dumped every second), the store's entries.
    deadline = time.monotonic() + 20
    while True:
        stats = admin(pod, "GET", "/admin/cache/stats").json()
        if stats["rates"]["source"] == "pod (2 workers)" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stats["rates"]["source"] == "pod (2 workers)"
    assert stats["store"] == pods.store and stats["entries"] >= 2
    if pod is p:  # the pod that answered the requests
        assert stats["rates"]["hits"] >= 10 and 0 < stats["rates"]["hit_rate"] <= 1
        assert stats["rates"]["phases"]["intent"]["hits"] >= 1
    assert stats["bound"]["max_wrong_rate"] == 0.01 and stats["bound"]["verifier"] == "learned"
    assert stats["memory"]["store_bytes"] > 0
    assert {c["scope"] for c in stats["clears"]} >= {"model:gpt-4o", "model:gpt-4o-mini"}

    table = cli(cfg, "stats", "--url", pod.url)
    assert table.returncode == 0, table.stderr
    assert "pod (2 workers)" in table.stdout and "exact" in table.stdout and "wrong-rate     <= 1%" in table.stdout
    offline = cli(cfg, "stats", "--json")  # straight over the store, no gateway asked
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["entries"] == stats["entries"]
