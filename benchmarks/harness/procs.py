"""Processes under test: start (pinned with taskset), wait until ready, measure via /proc, stop.

A server is measured as its whole process tree (Granian's workers, nginx's worker, node's
children), found by walking /proc parent links from the pid we started. Memory is resident set
size summed over the tree; CPU is utime + stime summed over the tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def http_ok(url: str, body: bytes | None, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    """One blocking request: (status, body); status 0 when the connection failed."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def pinned(cmd: list[str], cores: str | None) -> list[str]:
    """Prefix `cmd` with taskset when a core list is given and taskset exists."""
    if cores is None or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", cores, *cmd]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    children = _children_map()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def core_times() -> dict[str, tuple[int, int]]:
    """Per-core (busy, total) jiffies from /proc/stat, to tell whether a core was saturated."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        values = [int(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        out[name[3:]] = (sum(values) - idle, sum(values))
    return out


def core_util(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Busy share of each core between two core_times() readings (1.0 = saturated)."""
    util = {}
    for core, (busy1, total1) in after.items():
        busy0, total0 = before.get(core, (0, 0))
        util[core] = round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else 0.0
    return util


@dataclass
class TreeSample:
    cpu_s: float
    rss_total: int
    rss_max_process: int
    processes: int


def sample_tree(root: int) -> TreeSample:
    pids = tree(root)
    rss = [rss_bytes(p) for p in pids]
    return TreeSample(
        cpu_s=sum(cpu_seconds(p) for p in pids),
        rss_total=sum(rss),
        rss_max_process=max(rss, default=0),
        processes=len(pids),
    )


@dataclass
class Server:
    """A started process group we own; `stop()` ends exactly that group."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    peak_rss: int = 0
    peak_rss_process: int = 0
    level_peak_rss: int = 0  # reset by the runner at each level
    companions: list[Server] = field(default_factory=list)  # started for this one (a compliance service)
    _sampler: threading.Thread | None = None
    _stop_sampling: threading.Event = field(default_factory=threading.Event)
    _cpu_base: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sample(self) -> TreeSample:
        s = sample_tree(self.pid)
        self.peak_rss = max(self.peak_rss, s.rss_total)
        self.level_peak_rss = max(self.level_peak_rss, s.rss_total)
        self.peak_rss_process = max(self.peak_rss_process, s.rss_max_process)
        # A worker that exits takes its CPU seconds with it: never let the total go backwards.
        self._cpu_base = max(self._cpu_base, s.cpu_s)
        return s

    def cpu_s(self) -> float:
        self.sample()
        return self._cpu_base

    def start_sampling(self, interval: float = 0.25) -> None:
        def run() -> None:
            while not self._stop_sampling.wait(interval):
                if self.proc.poll() is not None:
                    return
                self.sample()

        self._sampler = threading.Thread(target=run, name=f"sample-{self.name}", daemon=True)
        self._sampler.start()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def last_error(self) -> str | None:
        """The last line of the log that mentions an error (to say why requests failed)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines[-2000:]):
            if "error" in line.lower() or "exception" in line.lower():
                return line.strip()[:300]
        return None

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_sampling.set()
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # Workers that outlive their parent still belong to our group.
        _signal_group(self.proc.pid, signal.SIGKILL)
        if self._sampler is not None:
            self._sampler.join(timeout=2)
        for companion in self.companions:
            companion.stop(timeout)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start(
    name: str,
    cmd: list[str],
    port: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Server:
    """Start `cmd` in its own session (so it can be stopped as a group), output to a log file."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    log.close()
    return Server(name=name, proc=proc, port=port, log_path=log_path)


def wait_quiet(server: Server, max_wait: float = 8.0, threshold: float = 0.15) -> float:
    """Wait until the server's CPU use drops below `threshold` cores (it drained earlier load)."""
    deadline = time.monotonic() + max_wait
    before = server.cpu_s()
    started = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = server.cpu_s()
        if (now - before) / 0.3 < threshold:
            break
        before = now
    return time.monotonic() - started
