"""Golden files of the translators: each module here renders its cases; `write` stores them."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def write(rendered: dict[str, bytes]) -> int:
    """Store every rendered case under golden/ as sent (the tests compare byte for byte)."""
    for name, data in rendered.items():
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print("wrote", path.relative_to(HERE))
    return 0
