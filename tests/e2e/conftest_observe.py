"""Helpers for the observability end-to-end tests: gateways with the audit log, archive and metrics on."""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import openai

from tests.conftest import free_port
from tests.e2e.conftest import API_KEY, MASTER_KEY, Proc, start_process, write_config

T = TypeVar("T")
ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}


def start_observed(tmp: Path, name: str, mock: Proc, slow: Proc, *, redis_url: str = "",
                   observe: dict[str, Any] | None = None, archive: dict[str, Any] | None = None,
                   workers: int = 2) -> Proc:
    """A `gateway serve --workers N` with its own embedded store, metrics dir and (optional) archive."""
    home = tmp / name
    home.mkdir(parents=True, exist_ok=True)
    settings = {"observe": {"metrics_dir": str(home / "metrics"), "flush_interval_s": 0.2, **(observe or {})},
                "archive": {"path": str(home / "archive.db"), **(archive or {})}}
    cfg = write_config(home / "gateway.yaml", mock, free_port(), slow,
                       extra={"store": {"embedded_path": str(home / "store.db"), "redis_url": redis_url},
                              **settings})
    env = {"E2E_API_KEY": API_KEY, "E2E_UPSTREAM_KEY": "sk-upstream-secret", "GATEWAY_MASTER_KEY": MASTER_KEY}
    return start_process(["serve", "--config", str(cfg), "--workers", str(workers)], home / "gateway.log",
                         env=env, ready_path="/readyz")


def admin_get(gw: Proc, path: str, **params: Any) -> Any:
    qs = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return gw.get_json(path + (f"?{qs}" if qs else ""), headers=ADMIN)


def wait_for(fn: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def entry_for(gw: Proc, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        data = admin_get(gw, "/api/vas/logs", request_id=request_id)["data"]
        return data[0] if data else None

    return wait_for(find, timeout, f"the audit entry of {request_id}")


def all_entries(gw: Proc, **filters: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = admin_get(gw, "/api/vas/logs", limit=1000, cursor=cursor, **filters)
        out += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def openai_client(gw: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0, timeout=20)


def anthropic_client(gw: Proc) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=API_KEY, max_retries=0, timeout=20)


def chat(gw: Proc, content: str = "hello", model: str = "gpt-4o-mini", **kw: Any) -> str:
    """One chat completion through the openai SDK on a fresh connection; returns the gateway request id."""
    with openai_client(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": content}], **kw)
        raw.parse()
        return str(raw.headers["x-gateway-request-id"])


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def scrape(gw: Proc) -> str:
    with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        return str(resp.read().decode())
