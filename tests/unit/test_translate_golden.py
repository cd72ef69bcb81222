"""Golden files for the translators: request and response, plain and streamed, tools included.

The expected bytes live in tests/unit/golden/; `python -m tests.unit.golden.translators` rewrites them
after a deliberate change (review the diff)."""

from __future__ import annotations

import pytest

from tests.unit.golden import HERE
from tests.unit.golden.translators import render_all

RENDERED = render_all()


def test_every_golden_file_has_a_case() -> None:
    on_disk = {str(p.relative_to(HERE)) for p in HERE.rglob("*") if p.suffix in (".json", ".sse")
               and p.parent.name in ("chat_to_anthropic", "passthrough")}
    assert on_disk == set(RENDERED)


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_translation_matches_its_golden_file(name: str) -> None:
    assert RENDERED[name] == (HERE / name).read_bytes(), f"{name} changed: regenerate and review the diff"


def test_the_untouched_request_is_the_clients_bytes() -> None:
    assert RENDERED["passthrough/request_untouched.json"] == \
        b'{"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "x": 1}'
