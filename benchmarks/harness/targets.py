"""What is measured: the mock upstream, our gateway, and the peers (direct, nginx, LiteLLM, Portkey).

Each target knows how to start itself against the mock on a free port, how requests must be
addressed to it (extra headers), and its version. A peer that is not installed is reported as
such, never a crash. Peers run with their default settings; the only environment set for LiteLLM
keeps it from fetching its model price map from the internet at start-up (no network here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import procs
from benchmarks.harness.variants import (
    COMPANY_VARIANT,
    COMPLIANCE_LATENCY_MS,
    VARIANTS,
    Variant,
    client_headers,
    config_for,
    environment,
)

HERE = Path(__file__).resolve().parent.parent
REPO = HERE.parent
PEERS = HERE / ".peers"
MODEL = "gpt-4o-mini"
API_KEY = "sk-bench-0000"
NOT_INSTALLED = "not installed — run make bench-peers"

# LiteLLM venvs made by `make bench-peers`: target name -> directory under .peers/
LITELLM = {"litellm": "litellm-current", "litellm-1.82.6": "litellm-1.82.6"}
PORTKEY_ENTRY = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


@dataclass
class Rig:
    """Shared facts for starting targets: the mock's address, core placement, scratch space."""

    mock_port: int
    workdir: Path
    gateway_cores: str | None  # None: unpinned
    rig_cores: str | None  # driver + mock
    standin: bool  # no `gateway` command: use the stand-ins (labelled in the results)
    log_dir: Path  # one log file per started process, kept after the run

    @property
    def mock_base(self) -> str:
        return f"http://127.0.0.1:{self.mock_port}"


@dataclass
class Target:
    name: str
    label: str
    start: Callable[[Rig], procs.Server] | None  # None: the direct call, nothing to start
    headers: Callable[[Rig], dict[str, str]] = field(default=lambda rig: {})
    version: Callable[[], str | None] = field(default=lambda: None)
    missing: Callable[[], str | None] = field(default=lambda: None)  # why it cannot run, if so
    pinned: bool = True
    workers: int = 1
    ready_timeout: float = 30.0


# ---- the gateway command -------------------------------------------------------------------------


def gateway_command() -> list[str] | None:
    """How to run the `gateway` CLI: as `python -m gateway.cli` (the very entry point of the `gateway`
    script, with the interpreter made explicit), or None when the package is not importable.

    The module form also keeps our processes out of reach of a broad `pkill -f "gateway mock"` run
    by someone else on a shared machine, which would otherwise end a benchmark half-way.
    """
    if importlib.util.find_spec("gateway.cli") is None:
        return None
    return [sys.executable, "-m", "gateway.cli"]


def _granian(app: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "rsgi",
        "--loop",
        "uvloop",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        app,
    ]


def start_mock(rig: Rig, latency_ms: int, chunks: int, chunk_interval_ms: float) -> procs.Server:
    port = rig.mock_port
    gw = gateway_command()
    if gw is None or rig.standin:
        env = {
            "STANDIN_LATENCY_MS": str(latency_ms),
            "STANDIN_STREAM_CHUNKS": str(chunks),
            "STANDIN_CHUNK_INTERVAL_MS": str(chunk_interval_ms),
            "PYTHONPATH": str(REPO),
        }
        cmd = _granian("benchmarks.harness.standin:mock", port, 1)
        return procs.start("mock", procs.pinned(cmd, rig.rig_cores), port, rig.log_dir, env=env, cwd=str(REPO))
    cmd = [
        *gw,
        "mock",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
        "--workers",
        "1",
        "--stream-chunks",
        str(chunks),
        "--chunk-interval-ms",
        str(chunk_interval_ms),
    ]
    return procs.start("mock", procs.pinned(cmd, rig.rig_cores), port, rig.log_dir, cwd=str(rig.workdir))


def _start_gateway(workers: int, variant: Variant | None = None) -> Callable[[Rig], procs.Server]:
    def start(rig: Rig) -> procs.Server:
        port = procs.free_port()
        name = variant.name if variant is not None else f"gateway-{workers}w"
        cores = rig.gateway_cores if workers == 1 else None
        gw = gateway_command()
        if gw is None or rig.standin:
            env = {"STANDIN_UPSTREAM": rig.mock_base, "PYTHONPATH": str(REPO)}
            cmd = _granian("benchmarks.harness.standin:forwarder", port, workers)
            return procs.start(name, procs.pinned(cmd, cores), port, rig.log_dir, env=env, cwd=str(REPO))
        cmd = [
            *gw,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--upstream",
            rig.mock_base,
        ]
        # Its own empty directory: an embedded store left by an earlier run must not serve hits.
        home = rig.workdir / name
        home.mkdir(exist_ok=True)
        if variant is None:
            return procs.start(name, procs.pinned(cmd, cores), port, rig.log_dir, cwd=str(home))
        return _start_variant(variant, rig, cmd, port, cores, home)

    return start


def _start_variant(
    variant: Variant, rig: Rig, cmd: list[str], port: int, cores: str | None, home: Path
) -> procs.Server:
    """A configured gateway: capabilities off through the environment, governance through a file."""
    env = environment(variant)
    companions: list[procs.Server] = []
    if variant.governed:
        url = None
        if variant.compliance:
            checker = start_compliance(rig)
            companions.append(checker)
            url = f"http://127.0.0.1:{checker.port}/check"
        config = home / "gateway.yaml"  # JSON is YAML
        config.write_text(json.dumps(config_for(variant, url), indent=2))
        cmd = [*cmd, "--config", str(config)]
    if variant.traced:  # any POST answered 200 at once: the collector a company would run
        sink = start_compliance(rig, latency_ms=0)
        companions.append(sink)
        env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}", "OTEL_SERVICE_NAME": "bench"}
    server = procs.start(variant.name, procs.pinned(cmd, cores), port, rig.log_dir, env=env, cwd=str(home))
    server.companions = companions
    return server


def start_compliance(rig: Rig, latency_ms: float = COMPLIANCE_LATENCY_MS) -> procs.Server:
    """The compliance service of the `http` policy, on the rig's core like the mock (latency 0: an OTLP sink)."""
    port = procs.free_port()
    env = {"COMPLIANCE_LATENCY_MS": str(latency_ms), "PYTHONPATH": str(REPO)}
    cmd = _granian("benchmarks.harness.compliance:app", port, 1)
    server = procs.start("compliance", procs.pinned(cmd, rig.rig_cores), port, rig.log_dir, env=env, cwd=str(REPO))
    try:
        procs.wait_for_port(port, 30, server.proc)
    except (RuntimeError, TimeoutError):
        server.stop()
        raise
    return server


def _start_forwarder(rig: Rig) -> procs.Server:
    """The featureless forwarder (forwarder.py), pinned like the gateway: the calibration point."""
    port = procs.free_port()
    env = {"FORWARD_TO": rig.mock_base, "PYTHONPATH": str(REPO)}
    cmd = _granian("benchmarks.harness.forwarder:app", port, 1)
    return procs.start("forwarder", procs.pinned(cmd, rig.gateway_cores), port, rig.log_dir, env=env, cwd=str(REPO))


def _forwarder_version() -> str | None:
    import importlib.metadata as md

    try:
        return f"granian {md.version('granian')}, aiohttp {md.version('aiohttp')}, msgspec {md.version('msgspec')}"
    except md.PackageNotFoundError:
        return None


def _gateway_version() -> str | None:
    try:
        import gateway

        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{gateway.__version__} ({rev or 'no commit'})"
    except Exception:  # a version string is a nicety, never a reason to fail the run
        return None


# ---- nginx ---------------------------------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
daemon off;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream mock {{
        server 127.0.0.1:{mock};
        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def _start_nginx(rig: Rig) -> procs.Server:
    port = procs.free_port()
    conf_dir = rig.workdir / "nginx"
    conf_dir.mkdir(exist_ok=True)
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = NGINX_CONF.format(user=user, dir=conf_dir, mock=rig.mock_port, port=port)
    (conf_dir / "nginx.conf").write_text(conf)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = [binary, "-p", str(conf_dir), "-e", str(conf_dir / "error.log"), "-c", str(conf_dir / "nginx.conf")]
    return procs.start("nginx", procs.pinned(cmd, rig.gateway_cores), port, rig.log_dir)


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _nginx_version() -> str | None:
    binary = _nginx_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    return out.split("/")[-1] if "/" in out else out


# ---- LiteLLM -------------------------------------------------------------------------------------

# Current releases refuse to start without a master key (no auth otherwise), so both versions get
# one, the minimum a user must set; requests carry it. Everything else is LiteLLM's default.
LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {base}/v1
      api_key: {key}
general_settings:
  master_key: {key}
"""


def _litellm_dir(name: str) -> Path:
    return PEERS / LITELLM[name]


def _start_litellm(name: str) -> Callable[[Rig], procs.Server]:
    def start(rig: Rig) -> procs.Server:
        port = procs.free_port()
        venv = _litellm_dir(name)
        cfg = rig.workdir / f"{name}.yaml"
        cfg.write_text(LITELLM_CONFIG.format(model=MODEL, base=rig.mock_base, key=API_KEY))
        cmd = [
            str(venv / "bin" / "litellm"),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"}
        return procs.start(name, procs.pinned(cmd, rig.gateway_cores), port, rig.log_dir, env=env, cwd=str(rig.workdir))

    return start


def _litellm_version(name: str) -> Callable[[], str | None]:
    def version() -> str | None:
        python = _litellm_dir(name) / "bin" / "python"
        if not python.exists():
            return None
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip() or None

    return version


def _litellm_missing(name: str) -> Callable[[], str | None]:
    return lambda: None if (_litellm_dir(name) / "bin" / "litellm").exists() else NOT_INSTALLED


# ---- Portkey -------------------------------------------------------------------------------------


def _start_portkey(rig: Rig) -> procs.Server:
    port = procs.free_port()
    node = shutil.which("node") or "node"
    cmd = [node, str(PORTKEY_ENTRY), f"--port={port}"]
    return procs.start("portkey", procs.pinned(cmd, rig.gateway_cores), port, rig.log_dir, cwd=str(rig.workdir))


def _portkey_headers(rig: Rig) -> dict[str, str]:
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{rig.mock_base}/v1"}


def _portkey_version() -> str | None:
    pkg = PORTKEY_ENTRY.parent.parent / "package.json"
    return json.loads(pkg.read_text()).get("version") if pkg.exists() else None


def _portkey_missing() -> str | None:
    if not PORTKEY_ENTRY.exists():
        return NOT_INSTALLED
    return None if shutil.which("node") else "node is not installed (apt-get install -y nodejs)"


# ---- the catalogue -------------------------------------------------------------------------------


def _variant_target(v: Variant) -> Target:
    return Target(
        v.name,
        v.label,
        _start_gateway(1, v),
        headers=lambda rig: client_headers(v),
        version=_gateway_version,
        ready_timeout=90,
    )


def catalogue() -> dict[str, Target]:
    return {
        "direct": Target("direct", "direct call to the mock (the floor)", None),
        "gateway": Target(
            "gateway",
            "gateway on embedded defaults (`serve --upstream`, auth off), 1 worker, pinned to 1 core",
            _start_gateway(1),
            version=_gateway_version,
            ready_timeout=90,
        ),
        COMPANY_VARIANT.name: _variant_target(COMPANY_VARIANT),
        **{v.name: _variant_target(v) for v in VARIANTS.values()},
        "forwarder": Target(
            "forwarder",
            "featureless forwarder: Granian (RSGI, 1 worker, uvloop) + msgspec + one aiohttp session",
            _start_forwarder,
            version=_forwarder_version,
        ),
        "gateway-2w": Target(
            "gateway-2w",
            "gateway, 2 workers, unpinned (shares both cores)",
            _start_gateway(2),
            version=_gateway_version,
            pinned=False,
            workers=2,
            ready_timeout=90,
        ),
        "nginx": Target(
            "nginx",
            "nginx reverse proxy, 1 worker",
            _start_nginx,
            version=_nginx_version,
            missing=lambda: None if _nginx_binary() else "nginx is not installed (apt-get install -y nginx)",
        ),
        "litellm": Target(
            "litellm",
            "LiteLLM proxy (current release)",
            _start_litellm("litellm"),
            version=_litellm_version("litellm"),
            missing=_litellm_missing("litellm"),
            ready_timeout=120,
        ),
        "litellm-1.82.6": Target(
            "litellm-1.82.6",
            "LiteLLM proxy 1.82.6",
            _start_litellm("litellm-1.82.6"),
            version=_litellm_version("litellm-1.82.6"),
            missing=_litellm_missing("litellm-1.82.6"),
            ready_timeout=120,
        ),
        "portkey": Target(
            "portkey",
            "Portkey gateway (node)",
            _start_portkey,
            headers=_portkey_headers,
            version=_portkey_version,
            missing=_portkey_missing,
            ready_timeout=60,
        ),
    }
