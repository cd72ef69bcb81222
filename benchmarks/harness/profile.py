"""Optional py-spy profile of a target during one load level (`--profile gateway:throughput@300conn`).

py-spy samples the target's whole process tree without stopping it (--nonblocking) from the rig's
core; the collapsed stacks are kept (feed them to any flamegraph tool) and summarised in the
results as the frames where the samples landed, which is what a missed target's note needs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.harness.procs import pinned

REPO = Path(__file__).resolve().parents[2]


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, cores: str | None) -> subprocess.Popen[bytes] | None:
    """Begin sampling `pid` and its children for `seconds`; None when py-spy is not installed."""
    binary = py_spy()
    if binary is None:
        return None
    cmd = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--nonblocking",
        "--rate",
        "250",
        "--duration",
        str(max(1, round(seconds))),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    return subprocess.Popen(pinned(cmd, cores), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], out: Path, top: int = 15) -> dict[str, Any]:
    """Wait for py-spy and summarise its collapsed stacks."""
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not out.exists():
        return {"error": err.decode(errors="replace").strip()[-300:] or "py-spy wrote nothing"}
    return {"file": str(out), **summarize(out.read_text(errors="replace"), top)}


def summarize(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Leaf frames (where the time is spent) and inclusive functions, as shares of all samples."""
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if "(" in f]  # drop the process and thread labels
        if not frames:
            continue
        total += n
        leaves[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += n
    if not total:
        return {"samples": 0}

    def shares(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(n / total, 4)] for frame, n in counter.most_common(top)]

    # Inclusive time is only telling for our own code (every stack shares the server's boilerplate).
    ours = Counter({frame: n for frame, n in inclusive.items() if "(gateway/" in frame and not launcher(frame)})
    return {"samples": total, "self": shares(leaves), "inclusive_gateway": shares(ours)}


# A worker's main thread sits in this frame while Granian's Rust side runs its I/O loop (or idles).
_NATIVE = "MPServer._spawn_rsgi_worker"


def launcher(frame: str) -> bool:
    """Frames of the command that started the server: on every stack, so they tell nothing."""
    return frame.startswith("<module>") or "(gateway/cli.py)" in frame or "(gateway/server.py)" in frame


def _short(frame: str) -> str:
    """'handle (gateway/pipeline.py:42)' -> 'handle (gateway/pipeline.py)': lines split one function."""
    name, _, where = frame.partition(" (")
    if name == _NATIVE:
        return "granian native loop: Rust I/O or idle (granian/server/mp.py)"
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{REPO}/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"
