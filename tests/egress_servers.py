"""Real servers for the egress tests: a throwaway PKI (openssl CLI), tinyproxy as the forward proxy,
and the gateway's mock served over TLS by Granian, verifying client certificates."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, stop_process, wait_for_port


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # trusts nothing the mock presents
    client_combined: Path  # the client certificate and key in one file


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by it."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (apt-get install -y openssl)")
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    for name in ("ca", "other-ca"):
        _openssl("genpkey", *ec, "-out", f"{name}.key", cwd=d)
        _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-days", "2", "-subj", f"/CN=egress test {name}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                 "-out", f"{name}.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("genpkey", *ec, "-out", f"{name}.key", cwd=d)  # PKCS#8, which Granian wants
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN=egress test {name}", "-out", f"{name}.csr",
                 cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
    combined = d / "client-combined.pem"
    combined.write_text((d / "client.pem").read_text() + (d / "client.key").read_text())
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
               d / "other-ca.pem", combined)


@dataclass
class Tinyproxy:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, pattern: str) -> int:
        """How many requests the proxy logged whose request line matches `pattern` (a regex)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return len(re.findall(r"Request \(file descriptor \d+\): " + pattern, text))

    def wait_requests(self, pattern: str, at_least: int, timeout: float = 20.0) -> int:
        """Poll the log (tinyproxy writes it as it goes) until `at_least` matching lines are there."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.requests(pattern)
            if n >= at_least or time.monotonic() > deadline:
                return n
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc, 10)


def start_tinyproxy(d: Path, basic_auth: tuple[str, str] | None = None) -> Tinyproxy:
    binary = shutil.which("tinyproxy") or ("/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None)
    if binary is None:
        pytest.fail("tinyproxy is not installed (apt-get install -y tinyproxy; see tests/system_deps.sh)")
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = d / f"tinyproxy-{port}.log"
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 60", f"LogFile \"{log}\"", "LogLevel Connect",
             f"PidFile \"{d / f'tinyproxy-{port}.pid'}\"", "MaxClients 50", "Allow 127.0.0.1",
             "DisableViaHeader Yes"]  # no ConnectPort line: CONNECT to any port (the mock's)
    if basic_auth:
        lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
    conf = d / f"tinyproxy-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = Tinyproxy(port, log, proc)
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        proxy.stop()
        raise
    return proxy


@dataclass
class TlsMock:
    port: int
    proc: subprocess.Popen[bytes]
    pki: Pki

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        ctx.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return ctx

    def requests(self) -> list[dict[str, Any]]:
        # Direct, whatever proxy the test put in the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self.client_context()))
        with opener.open(self.url + "/_mock/requests", timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        stop_process(self.proc, 15)


def start_tls_mock(d: Path, pki: Pki) -> TlsMock:
    """`gateway mock` behind Granian's TLS, which refuses clients without a certificate from the CA."""
    port = free_port()
    env = {**os.environ, "GATEWAY_MOCK_SETTINGS": json.dumps({"latency_ms": 5})}
    log = (d / f"tls-mock-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "rsgi", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--ssl-certificate", str(pki.server_cert), "--ssl-keyfile", str(pki.server_key),
         "--ssl-ca", str(pki.ca), "--ssl-client-verify", "--ssl-protocol-min", "tls1.2", "--log-level", "warning",
         "gateway.mock.main:app"], stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    mock = TlsMock(port, proc, pki)
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 30
        while True:  # listening is not serving: wait until an answer comes over TLS
            try:
                mock.requests()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
    except Exception:
        mock.stop()
        raise RuntimeError(f"the TLS mock did not start:\n{(d / f'tls-mock-{port}.log').read_text()[-3000:]}") \
            from None
    return mock
