"""The redis-server flags of the bundled Redis container, whichever way the chart starts it."""

from __future__ import annotations

import shlex
from typing import Any


def redis_script(sts: dict[str, Any]) -> str | None:
    """The shell script that starts Redis with its password on stdin, or None (no password)."""
    container = sts["spec"]["template"]["spec"]["containers"][0]
    if container.get("command") == ["sh", "-c"]:
        return str(container["args"][0])
    return None


def redis_flags(sts: dict[str, Any]) -> list[str]:
    script = redis_script(sts)
    if script is None:
        args: list[str] = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[0] == "redis-server"
        return args[1:]
    first = script.splitlines()[0]
    words = shlex.split(first.split("<<", 1)[0])
    assert words[:3] == ["exec", "redis-server", "-"], first
    return words[3:]
