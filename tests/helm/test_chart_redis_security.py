"""The bundled Redis is not open to the cluster: a generated (or existing) password, a NetworkPolicy
that admits only the gateway's pods, and an external Redis Cluster URL taken from a Secret.

The start-up script the chart renders is run here against a real redis-server, and the URL the
gateway pod would get (after Kubernetes' $(VAR) expansion) is used to connect, so a quoting or
expansion mistake in the templates fails a test rather than a rollout.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import helm_python
import pytest
import redis

from tests.conftest import free_port
from tests.helm.redis_flags import redis_flags, redis_script

FULLNAME = "gw-gateway"
REDIS_SVC = f"{FULLNAME}-redis"


def _secret_ref(env: dict[str, Any]) -> dict[str, str]:
    return dict(env["valueFrom"]["secretKeyRef"])


def _redis_env(sts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0].get("env", [])}


def test_default_password_is_generated_and_stays_out_of_config_and_command_lines(render) -> None:
    r = render()
    secret = r.one("Secret", REDIS_SVC)
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", password)
    assert render().one("Secret", REDIS_SVC)["data"] != secret["data"]  # random per install, not a constant
    sts = r.one("StatefulSet", REDIS_SVC)
    script = redis_script(sts)
    assert script is not None and "requirepass $REDIS_PASSWORD" in script
    everything_but_the_secret = "".join(text for path, text in r.files.items() if "redis.yaml" not in path)
    everything_but_the_secret += str(sts)
    assert password not in everything_but_the_secret
    ref = {"name": REDIS_SVC, "key": "redis-password"}
    env = _redis_env(sts)
    assert _secret_ref(env["REDIS_PASSWORD"]) == ref and _secret_ref(env["REDISCLI_AUTH"]) == ref
    names = [e["name"] for e in r.container["env"]]
    # Kubernetes expands $(VAR) only from variables defined earlier in the list.
    assert names.index("GATEWAY_REDIS_PASSWORD") < names.index("GATEWAY_REDIS_URL")
    assert _secret_ref(r.env()["GATEWAY_REDIS_PASSWORD"]) == ref
    assert r.env()["GATEWAY_REDIS_URL"]["value"] == f"redis://:$(GATEWAY_REDIS_PASSWORD)@{REDIS_SVC}:6379/0"
    assert r.gateway_config["store"]["redis_url"] == ""


def test_an_existing_password_secret(render) -> None:
    r = render({"redis": {"bundled": {"auth": {"existingSecret": "redis-pw", "existingSecretKey": "pw"}}}})
    assert not r.has("Secret", REDIS_SVC)
    ref = {"name": "redis-pw", "key": "pw"}
    assert _secret_ref(_redis_env(r.one("StatefulSet", REDIS_SVC))["REDIS_PASSWORD"]) == ref
    assert _secret_ref(r.env()["GATEWAY_REDIS_PASSWORD"]) == ref


def test_auth_off_restores_the_open_redis(render) -> None:
    r = render({"redis": {"bundled": {"auth": {"enabled": False}}}})
    assert not r.has("Secret", REDIS_SVC)
    sts = r.one("StatefulSet", REDIS_SVC)
    assert redis_script(sts) is None and "env" not in sts["spec"]["template"]["spec"]["containers"][0]
    assert "GATEWAY_REDIS_URL" not in r.env()
    assert r.gateway_config["store"]["redis_url"] == f"redis://{REDIS_SVC}:6379/0"


@pytest.fixture
def rendered_redis(render) -> Iterator[tuple[str, str, int]]:
    """The chart's Redis start-up script running on a free port: (password, gateway URL, port)."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    r = render()
    password = base64.b64decode(r.one("Secret", REDIS_SVC)["data"]["redis-password"]).decode()
    script = redis_script(r.one("StatefulSet", REDIS_SVC))
    assert script is not None
    port = free_port()
    flags = redis_flags(r.one("StatefulSet", REDIS_SVC))
    assert flags[flags.index("--port") + 1] == "6379"
    assert "'--port' '6379'" in script
    script = script.replace("'--port' '6379'", f"'--port' '{port}'")
    proc = subprocess.Popen(["sh", "-c", script], env={**os.environ, "REDIS_PASSWORD": password},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # What Kubernetes does with $(GATEWAY_REDIS_PASSWORD), pointed at the local server.
    url = r.env()["GATEWAY_REDIS_URL"]["value"].replace("$(GATEWAY_REDIS_PASSWORD)", password)
    url = url.replace(f"@{REDIS_SVC}:6379/", f"@127.0.0.1:{port}/")
    try:
        _wait_listening(port, proc)
        yield password, url, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the rendered Redis script did not start (exit {proc.poll()})") from None
            time.sleep(0.02)


def test_rendered_redis_refuses_clients_without_the_password(rendered_redis: tuple[str, str, int]) -> None:
    password, url, port = rendered_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, retry=None).get("budget")
    assert redis.Redis.from_url(url, retry=None).ping()  # the URL the gateway pod gets
    ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], env={**os.environ, "REDISCLI_AUTH": password},
                          capture_output=True, text=True, timeout=10)
    assert ping.stdout.strip() == "PONG"  # the readiness probe, with REDISCLI_AUTH
    cmdline = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f":{port}" in cmdline and password not in cmdline


def test_the_gateway_accepts_the_url_it_is_given(rendered_redis: tuple[str, str, int]) -> None:
    from gateway.config import load_config

    _, url, _ = rendered_redis
    assert load_config(None, environ={"GATEWAY_REDIS_URL": url}).store.redis_url == url


def test_network_policy_admits_only_gateway_pods(render) -> None:
    r = render()
    policy = r.one("NetworkPolicy", REDIS_SVC)["spec"]
    assert policy["podSelector"]["matchLabels"] == r.one("StatefulSet", REDIS_SVC)["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]
    gateway_selector = r.deployment["spec"]["selector"]["matchLabels"]
    assert peer == {"podSelector": {"matchLabels": gateway_selector}}
    assert gateway_selector.items() <= r.deployment["spec"]["template"]["metadata"]["labels"].items()
    assert peer["podSelector"]["matchLabels"] != policy["podSelector"]["matchLabels"]  # not Redis itself
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]


def test_network_policy_extra_peers_and_off(render) -> None:
    backup = {"podSelector": {"matchLabels": {"app": "redis-backup"}}}
    r = render({"redis": {"bundled": {"networkPolicy": {"extraFrom": [backup]}}}})
    assert r.one("NetworkPolicy", REDIS_SVC)["spec"]["ingress"][0]["from"][1] == backup
    assert not render({"redis": {"bundled": {"networkPolicy": {"enabled": False}}}}).all("NetworkPolicy")
    assert not render({"redis": {"bundled": {"enabled": False}}}).all("NetworkPolicy")


def test_external_redis_cluster_url_from_a_secret(render) -> None:
    r = render({"redis": {"bundled": {"enabled": False},
                          "cluster": {"existingSecret": "redis-cluster", "existingSecretKey": "url"}}})
    assert _secret_ref(r.env()["GATEWAY_REDIS_URL"]) == {"name": "redis-cluster", "key": "url"}
    assert r.gateway_config["store"]["redis_url"] == ""
    assert not r.has("StatefulSet", REDIS_SVC) and not r.all("NetworkPolicy")
    assert "GATEWAY_REDIS_PASSWORD" not in r.env()
    default_key = render({"redis": {"bundled": {"enabled": False}, "cluster": {"existingSecret": "c"}}})
    assert _secret_ref(default_key.env()["GATEWAY_REDIS_URL"]) == {"name": "c", "key": "redis-cluster-url"}


@pytest.mark.parametrize(("values", "message"), [
    ({"redis": {"cluster": {"existingSecret": "c"}}},
     "redis.bundled.enabled and an external Redis (redis.cluster.existingSecret) exclude each other"),
    ({"redis": {"bundled": {"enabled": False}, "url": "redis://a:6379/0", "cluster": {"existingSecret": "c"}}},
     "set only one external Redis, got redis.url, redis.cluster.existingSecret"),
    ({"redis": {"bundled": {"auth": {"existingSecretKey": "a key"}}}}, "existingSecretKey"),
    ({"redis": {"bundled": {"auth": {"password": "x"}}}}, "password"),
    ({"redis": {"bundled": {"networkPolicy": {"extraFrom": "everyone"}}}}, "extraFrom"),
])
def test_impossible_redis_values_fail(render_unchecked, values: dict[str, Any], message: str) -> None:
    with pytest.raises((helm_python.HelmValuesError, helm_python.HelmRenderError)) as exc:
        render_unchecked(values)
    assert message in str(exc.value)
