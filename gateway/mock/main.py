"""The mock upstream as a Granian target: settings come from GATEWAY_MOCK_* set by `gateway mock`."""

from __future__ import annotations

import os

import msgspec

from gateway.mock.app import MockApp, MockSettings


def settings_from_env() -> MockSettings:
    raw = os.environ.get("GATEWAY_MOCK_SETTINGS")
    return msgspec.json.decode(raw, type=MockSettings) if raw else MockSettings()


app = MockApp(settings_from_env())
