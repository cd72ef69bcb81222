"""Unit-test fixtures shared across modules."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from gateway.transform.compress.phrases import load_engine

STRICT = os.environ.get("GATEWAY_STRICT_NATIVE") == "1"


@pytest.fixture(scope="module", params=["native", "python"])
def engine(request: pytest.FixtureRequest) -> ModuleType:
    """Both phrase engines: the Cython extension and its pure-Python twin (same names, same output)."""
    try:
        return load_engine(request.param)
    except ImportError as exc:
        if STRICT:
            pytest.fail(f"GATEWAY_STRICT_NATIVE=1 but {exc}")
        pytest.skip(f"{exc} (set GATEWAY_STRICT_NATIVE=1 to make this a failure)")
