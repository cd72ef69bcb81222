"""Golden files for `gateway config import-litellm`: every real LiteLLM config in tests/data/litellm
rendered as the command writes it (golden/litellm/<name>.yaml, comment block included).

Regenerate (after a deliberate change, then review the diff):  python -m tests.unit.golden.litellm
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.litellm_import import convert, render
from tests.unit.golden import write

DATA = Path(__file__).resolve().parents[2] / "data" / "litellm"


def render_all() -> dict[str, bytes]:
    return {f"litellm/{path.name}": render(convert(path.read_text()), path.name).encode()
            for path in sorted(DATA.glob("*.yaml"))}


if __name__ == "__main__":
    sys.exit(write(render_all()))
