"""Two breakers, two names: the provider outlier detector (`providers.resilience.Breaker`) and the
store's error boundary (`store.StoreBreaker`). One name for both made imports and docs ambiguous."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import gateway.store
from gateway.providers import resilience
from gateway.store import StoreBreaker, StoreUnavailable

ROOT = Path(__file__).resolve().parents[2] / "gateway"


def test_every_breaker_class_name_is_defined_once() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and "Breaker" in node.name:
                where[node.name].append(str(path.relative_to(ROOT)))
    assert {n: p for n, p in where.items() if len(p) > 1} == {}
    assert where["StoreBreaker"] == ["store/base.py"]
    assert where["Breaker"] == ["providers/resilience.py"]


def test_the_store_package_no_longer_exports_the_old_name() -> None:
    assert "Breaker" not in gateway.store.__all__
    assert not hasattr(gateway.store, "Breaker")
    assert StoreBreaker is not resilience.Breaker


async def test_store_breaker_translates_errors_and_fails_fast() -> None:
    b = StoreBreaker("test", (OSError,))
    calls = 0

    async def boom() -> int:
        nonlocal calls
        calls += 1
        raise OSError("down")

    with pytest.raises(StoreUnavailable, match="test: OSError"):
        await b.run(boom)
    # Backing off: no second call reaches the backend.
    with pytest.raises(StoreUnavailable, match="backing off"):
        await b.run(boom)
    assert (calls, b.degraded, b.outages) == (1, True, 1)
