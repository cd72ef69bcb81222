"""Bedrock's AWS credentials: environment, shared credentials file (re-read when it changes) and
container credentials (fetched again before they expire), and a provider signing with each."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.config import ProviderConfig
from gateway.errors import BadRequest, UpstreamUnreachable
from gateway.mock import bedrock as mock_bedrock
from gateway.providers import aws_credentials as ac
from gateway.providers.aws_credentials import AwsCredentialSource, CredentialsUnavailable
from gateway.providers.mock_transport import MockRequest, MockResponse, MockTransport
from gateway.providers.sigv4 import Credentials
from gateway.providers.upstream import Provider
from tests.aio_app import serve_app

CFG = ProviderConfig(kind="bedrock", region="us-east-1")
NOWHERE = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials"}


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- environment and file


async def test_the_environment_comes_first_and_is_read_once() -> None:
    env = {**NOWHERE, "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t"}
    src = AwsCredentialSource(CFG, env)
    env["AWS_ACCESS_KEY_ID"] = "CHANGED"
    assert (await src.get(), src.source) == (Credentials("AKID", "s", "t"), "environment")
    custom = ProviderConfig(kind="bedrock", region="x", aws_access_key_id_env="K", aws_secret_access_key_env="S")
    assert await AwsCredentialSource(custom, {**NOWHERE, "K": "k2", "S": "s2"}).get() == Credentials("k2", "s2")


def write_credentials(path: Path, **profiles: tuple[str, str, str]) -> None:
    text = ""
    for name, (key, secret, token) in profiles.items():
        text += f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
        text += f"aws_session_token = {token}\n" if token else ""
    path.write_text(text)


async def test_the_shared_credentials_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    write_credentials(path, default=("AKID1", "s1", ""), prod=("PROD1", "p1", "tok1"))
    mono = Clock(0.0)
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(path)}
    src = AwsCredentialSource(CFG, env, mono=mono)
    assert await src.get() == Credentials("AKID1", "s1")
    prod = AwsCredentialSource(CFG, {**env, "AWS_PROFILE": "prod"}, mono=mono)
    assert await prod.get() == Credentials("PROD1", "p1", "tok1")

    write_credentials(path, default=("AKID2", "s2", "tok2"), prod=("PROD1", "p1", "tok1"))
    os.utime(path, ns=(10**18, 10**18))  # a different mtime whatever the file system's resolution
    assert await src.get() == Credentials("AKID1", "s1")  # looked at no more than once a second
    mono.t = 1.5
    assert await src.get() == Credentials("AKID2", "s2", "tok2")
    # Caught mid-write (not parseable yet): the last good credentials keep serving.
    path.write_text("[default\naws_access_key_id = ")
    mono.t = 3.0
    assert await src.get() == Credentials("AKID2", "s2", "tok2")
    # The profile gone from the file: an error, not stale credentials.
    write_credentials(path, prod=("PROD1", "p1", "tok1"))
    os.utime(path, ns=(2 * 10**18, 2 * 10**18))
    mono.t = 5.0
    with pytest.raises(CredentialsUnavailable, match=r"\[default\]"):
        await src.get()


async def test_a_configured_profile_wins_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    write_credentials(path, team=("TEAM", "ts", ""))
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(path), "AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "e"}
    cfg = ProviderConfig(kind="bedrock", region="x", aws_profile="team")
    assert await AwsCredentialSource(cfg, env).get() == Credentials("TEAM", "ts")
    missing = AwsCredentialSource(ProviderConfig(kind="bedrock", region="x", aws_profile="nope"), env)
    with pytest.raises(CredentialsUnavailable, match=r"\[nope\]"):
        await missing.get()


# ----------------------------------------------------------------------------- container credentials


class Agent:
    """Stands in for the container credentials endpoint: counts fetches, answers as told."""

    def __init__(self, wall: Clock) -> None:
        self.wall = wall
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.fail: Exception | int | None = None
        self.lifetime = 3600.0
        self.gate: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def __call__(self, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        self.calls.append((url, headers))
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.fail, Exception):
            raise self.fail
        if isinstance(self.fail, int):
            return self.fail, b"{}"
        n = len(self.calls)
        return 200, json.dumps({"AccessKeyId": f"ASIA{n}", "SecretAccessKey": f"secret{n}", "Token": f"token{n}",
                                "Expiration": iso(self.wall() + self.lifetime)}).encode()


def container(agent: Agent, wall: Clock, mono: Clock, **env: str) -> AwsCredentialSource:
    return AwsCredentialSource(CFG, {**NOWHERE, **env}, fetch=agent, wall=wall, mono=mono)


async def test_container_credentials_are_fetched_again_before_they_expire() -> None:
    wall, mono = Clock(), Clock(0.0)
    agent = Agent(wall)
    src = container(agent, wall, mono, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI="/v2/credentials/abc")
    assert src.source == "container credentials"
    assert await src.get() == Credentials("ASIA1", "secret1", "token1")
    assert agent.calls == [("http://169.254.170.2/v2/credentials/abc", {})]
    wall.t += 3600 - ac.REFRESH_BEFORE_S - 1  # not yet due
    assert (await src.get()).access_key == "ASIA1" and len(agent.calls) == 1
    wall.t += 2  # inside the refresh window
    assert await src.get() == Credentials("ASIA2", "secret2", "token2")
    assert len(agent.calls) == 2


async def test_a_failed_refresh_keeps_the_old_credentials_until_they_expire() -> None:
    wall, mono = Clock(), Clock(0.0)
    agent = Agent(wall)
    src = container(agent, wall, mono, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI="/creds")
    await src.get()
    wall.t += 3600 - 60  # due, one minute left
    agent.fail = OSError("connection refused")
    assert (await src.get()).access_key == "ASIA1"
    assert (await src.get()).access_key == "ASIA1" and len(agent.calls) == 2  # no retry storm
    mono.t += ac.RETRY_S
    agent.fail = 500
    assert (await src.get()).access_key == "ASIA1" and len(agent.calls) == 3
    wall.t += 61  # expired, and the agent still failing: an error now
    mono.t += ac.RETRY_S
    with pytest.raises(CredentialsUnavailable, match="HTTP 500"):
        await src.get()
    agent.fail = None
    assert (await src.get()).access_key == "ASIA5"


async def test_concurrent_requests_share_one_fetch() -> None:
    wall, mono = Clock(), Clock(0.0)
    agent = Agent(wall)
    agent.gate = asyncio.Event()
    src = container(agent, wall, mono, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI="/creds")
    waiting = [asyncio.create_task(src.get()) for _ in range(20)]
    await agent.called.wait()
    agent.gate.set()
    assert {c.access_key for c in await asyncio.gather(*waiting)} == {"ASIA1"}
    assert len(agent.calls) == 1


async def test_pod_identity_token_file_is_read_at_every_fetch(tmp_path: Path) -> None:
    wall, mono = Clock(), Clock(0.0)
    agent = Agent(wall)
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("token-A\n")
    src = container(agent, wall, mono, AWS_CONTAINER_CREDENTIALS_FULL_URI="http://169.254.170.23/v1/credentials",
                    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token), AWS_CONTAINER_AUTHORIZATION_TOKEN="ignored")
    await src.get()
    token.write_text("token-B\n")  # rotated by the kubelet
    wall.t += 3600
    await src.get()
    assert agent.calls == [("http://169.254.170.23/v1/credentials", {"authorization": "token-A"}),
                           ("http://169.254.170.23/v1/credentials", {"authorization": "token-B"})]


@pytest.mark.parametrize(("url", "accepted"), [
    ("http://169.254.170.23/v1/credentials", True), ("http://127.0.0.1:9/creds", True),
    ("http://localhost:9/creds", True), ("https://creds.example.com/x", True),
    ("http://creds.example.com/x", False), ("http://10.0.0.1/x", False), ("file:///etc/passwd", False)])
def test_a_full_uri_over_plain_http_must_stay_on_the_host(url: str, accepted: bool) -> None:
    src = AwsCredentialSource(CFG, {**NOWHERE, "AWS_CONTAINER_CREDENTIALS_FULL_URI": url})
    assert src.configured is accepted


async def test_malformed_answers_are_errors_without_secrets() -> None:
    async def bad(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        return 200, b'{"SecretAccessKey": "do-not-print"}'

    src = AwsCredentialSource(CFG, {**NOWHERE, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/x"}, fetch=bad)
    with pytest.raises(CredentialsUnavailable) as err:
        await src.get()
    assert "do-not-print" not in str(err.value) and "expected JSON" in str(err.value)


# ----------------------------------------------------------------------------- through a provider


@pytest.fixture
async def agent_url() -> AsyncIterator[tuple[str, list[str]]]:
    """A real HTTP container credentials endpoint whose credentials are always inside the refresh window."""
    served: list[str] = []

    async def creds(request: web.Request) -> web.Response:
        if request.headers.get("authorization") != "pod-token":
            return web.json_response({"message": "no"}, status=403)
        n = len(served) + 1
        served.append(f"ASIA{n}")
        expires = iso(dt.datetime.now(dt.UTC).timestamp() + 60)  # < REFRESH_BEFORE_S: due at every use
        return web.json_response({"AccessKeyId": f"ASIA{n}", "SecretAccessKey": f"secret{n}",
                                  "Token": f"token{n}", "Expiration": expires})

    app = web.Application()
    app.router.add_get("/v1/credentials", creds)
    async with serve_app(app) as url:
        yield url + "/v1/credentials", served


async def test_a_provider_signs_with_refreshed_container_credentials(
        agent_url: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = agent_url
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-token")
    seen: list[MockRequest] = []

    async def answer(req: MockRequest) -> MockResponse:
        seen.append(req)
        return MockResponse(200, b'{"output": {"message": {"content": [{"text": "ok"}]}}}')

    bed = Provider("bed", CFG, 0, MockTransport(answer))
    body = b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}'
    for _ in range(2):
        (await bed.send("converse", "amazon.nova-lite-v1:0", body, {})).release()
    assert served == ["ASIA1", "ASIA2"]
    for n, req in enumerate(seen, 1):
        assert req.headers["x-amz-security-token"] == f"token{n}"
        assert f"Credential=ASIA{n}/" in req.headers["authorization"]
        sent = {**req.headers, "host": "bedrock-runtime.us-east-1.amazonaws.com"}
        path = req.url.split(".com", 1)[1]
        assert mock_bedrock.check_signature("POST", path, sent, body, f"secret{n}") is None

    # The agent refusing (a wrong token): a retryable 502 naming the cause, nothing sent upstream.
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong")
    refused = Provider("bed", CFG, 0, MockTransport(answer))
    with pytest.raises(UpstreamUnreachable, match="no usable AWS credentials: container credentials: HTTP 403"):
        await refused.send("converse", "amazon.nova-lite-v1:0", body, {})
    assert len(seen) == 2


async def test_no_source_at_all_is_a_clear_400(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    bed = Provider("bed", CFG, 0, MockTransport(_never))
    with pytest.raises(BadRequest, match="shared credentials file, or container credentials"):
        await bed.send("converse", "amazon.nova-lite-v1:0", b"{}", {})


async def _never(req: MockRequest) -> MockResponse:
    raise AssertionError("nothing should be sent")


async def test_warm_up_fetches_container_credentials_before_the_first_request(
        agent_url: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = agent_url
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url)
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "pod-token")
    bed = Provider("bed", ProviderConfig(kind="bedrock", region="us-east-1", warmup_connections=0), 0,
                   MockTransport(_never))
    await bed.warm_up()
    assert served == ["ASIA1"]
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong")
    refused = Provider("bed", ProviderConfig(kind="bedrock", region="us-east-1", warmup_connections=0), 0,
                       MockTransport(_never))
    await refused.warm_up()  # a refusal at start-up is not fatal: the request will say why
    assert served == ["ASIA1"]
