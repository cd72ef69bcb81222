"""Redis URLs: credentials and the CA file come from the URL or the environment, never need the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store.redis_url import _auth, _hosts, _tls, redis_client


def test_credentials_from_the_url_win_over_the_environment() -> None:
    env = {"GATEWAY_REDIS_PASSWORD": "from-env", "GATEWAY_REDIS_USERNAME": "env-user"}
    assert _auth("redis://gw:p%40ss@h:6379/0", env) == {"password": "p@ss", "username": "gw"}
    assert _auth("redis+cluster://h1:6379,h2:6379/0", env) == {"password": "from-env", "username": "env-user"}
    assert _auth("redis://h:6379/0", {}) == {}


def test_a_password_file_like_a_mounted_secret(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    assert _auth("redis+sentinel://h:26379/m", {"GATEWAY_REDIS_PASSWORD_FILE": str(secret)}) == {"password": "s3cret"}


def test_tls_and_its_ca_file() -> None:
    assert _tls("redis://h:6379/0", {"GATEWAY_REDIS_CA_CERTS": "/ca.pem"}) == {}
    assert _tls("rediss+cluster://h:6379", {"GATEWAY_REDIS_CA_CERTS": "/ca.pem"}) == {"ssl": True,
                                                                                     "ssl_ca_certs": "/ca.pem"}
    assert _tls("rediss://h:6379/0?ssl_ca_certs=/url.pem", {"GATEWAY_REDIS_CA_CERTS": "/ca.pem"})["ssl_ca_certs"] == \
        "/url.pem"
    assert _tls("rediss+sentinel://h/m", {}) == {"ssl": True}


def test_hosts_and_cluster_urls() -> None:
    assert _hosts("u:p@h1:7000,h2,h3:7002", 6379) == [("h1", 7000), ("h2", 6379), ("h3", 7002)]
    client = redis_client("rediss+cluster://gw:pw@h1:7000,h2:7001", max_connections=4, connect_s=0.1, op_s=0.1,
                          environ={"GATEWAY_REDIS_CA_CERTS": "/ca.pem"})
    assert client.cluster
    kw = client.client.get_connection_kwargs()
    assert (kw["username"], kw["password"], kw["ssl_ca_certs"]) == ("gw", "pw", "/ca.pem")
    with pytest.raises(ValueError, match="db 0"):
        redis_client("redis+cluster://h1:7000/2", max_connections=4, connect_s=0.1, op_s=0.1, environ={})
