"""A Sentinel-managed Redis given as redis+sentinel://... works as the shared store."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import open_store
from tests.conftest import RedisServer, free_port, wait_for_port


@pytest.fixture
def sentinel(tmp_path: Path, redis_server: RedisServer) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor gwmaster 127.0.0.1 {redis_server.port} 1\n")
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    proc = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield port
    proc.terminate()
    proc.wait(10)


async def test_sentinel_url(sentinel: int, redis_server: RedisServer) -> None:
    redis_server.flush()
    store = open_store(f"redis+sentinel://127.0.0.1:{sentinel}/gwmaster/0")
    try:
        await store.set("gw:test:sentinel", b"via sentinel", ttl_s=30)
        assert await store.get("gw:test:sentinel") == b"via sentinel"
        assert await store.hit_count("gw:test:count", 60) == 1
        assert await store.ping()
    finally:
        await store.close()
    import redis

    assert redis.Redis(port=redis_server.port).get("gw:test:sentinel") == b"via sentinel"
