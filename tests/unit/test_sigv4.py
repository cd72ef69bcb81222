"""The SigV4 signer against the published test suite (tests/data/sigv4/SOURCE.md says where from)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from gateway.providers import sigv4

VECTORS = Path(__file__).parents[1] / "data" / "sigv4"
CASES = sorted(p.name for p in VECTORS.iterdir() if p.is_dir())


def _request(case: Path) -> tuple[str, str, dict[str, str], bytes]:
    head, _, body = (case / "request.txt").read_bytes().partition(b"\n\n")
    lines = head.decode().split("\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rsplit(" ", 1)[0]  # the path may hold spaces: "GET /example space/ HTTP/1.1"
    headers: dict[str, str] = {}
    for line in filter(None, lines[1:]):
        name, _, value = line.partition(":")
        headers[name] = value
    host = next(v for k, v in headers.items() if k.lower() == "host")
    return method, f"https://{host}{target}", headers, body


def _context(case: Path) -> tuple[sigv4.Credentials, dict[str, object]]:
    ctx = json.loads((case / "context.json").read_text())
    c = ctx["credentials"]
    return sigv4.Credentials(c["access_key_id"], c["secret_access_key"], c.get("token", "")), ctx


@pytest.mark.parametrize("name", CASES)
def test_signature_equals_the_published_vector(name: str) -> None:
    case = VECTORS / name
    creds, ctx = _context(case)
    method, url, headers, body = _request(case)
    when = dt.datetime.fromisoformat(str(ctx["timestamp"]).replace("Z", "+00:00"))
    signer = sigv4.Signer(str(ctx["region"]), str(ctx["service"]))
    added = signer.sign(method, url, headers, body, creds, when, content_sha256=bool(ctx["sign_body"]))

    payload = hashlib.sha256(body).hexdigest()
    creq, _ = sigv4.canonical_request(method, url, {**headers, **{k: v for k, v in added.items()
                                                                  if k != "authorization"}}, payload)
    assert creq == (case / "header-canonical-request.txt").read_text()
    amz = added["x-amz-date"]
    sts = sigv4.string_to_sign(amz, sigv4.scope(amz[:8], str(ctx["region"]), str(ctx["service"])), creq)
    assert sts == (case / "header-string-to-sign.txt").read_text()
    signature = (case / "header-signature.txt").read_text().strip()
    assert added["authorization"].endswith("Signature=" + signature)
    expected_auth = next(line.partition(":")[2] for line in (case / "header-signed-request.txt").read_text()
                         .splitlines() if line.startswith("Authorization:"))
    assert added["authorization"] == expected_auth


def test_a_bedrock_model_id_is_signed_encoded_twice() -> None:
    # The colon of a model id travels as %3A; the canonical path encodes it once more.
    url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-v2%3A1/converse"
    assert sigv4.canonical_uri(url.split(".com", 1)[1]) == "/model/anthropic.claude-v2%253A1/converse"


def test_the_signing_key_follows_a_change_of_day_and_of_credentials() -> None:
    signer = sigv4.Signer("us-east-1", "bedrock")
    a = sigv4.Credentials("AKIDA", "secret-a")
    b = sigv4.Credentials("AKIDB", "secret-b")
    day1 = dt.datetime(2026, 1, 1, 23, 59, tzinfo=dt.UTC)
    day2 = dt.datetime(2026, 1, 2, 0, 1, tzinfo=dt.UTC)
    h = {"host": "x.amazonaws.com"}
    s1 = signer.sign("POST", "https://x.amazonaws.com/", h, b"{}", a, day1)["authorization"]
    s2 = signer.sign("POST", "https://x.amazonaws.com/", h, b"{}", a, day2)["authorization"]
    s3 = signer.sign("POST", "https://x.amazonaws.com/", h, b"{}", b, day2)["authorization"]
    fresh = sigv4.Signer("us-east-1", "bedrock").sign("POST", "https://x.amazonaws.com/", h, b"{}", b, day2)
    assert len({s1, s2, s3}) == 3
    assert s3 == fresh["authorization"]


def test_credentials_never_print_their_secret() -> None:
    assert "secret-value" not in repr(sigv4.Credentials("AKID", "secret-value", "token-value"))
    assert "token-value" not in repr(sigv4.Credentials("AKID", "secret-value", "token-value"))


def test_a_bedrock_request_signs_as_botocore_signs_it() -> None:
    # Expected value computed once with botocore 1.44.8's SigV4Auth (2026-12-02) for this request:
    # a model id whose ":" travels as %3A, temporary credentials, a streaming accept header.
    url = ("https://bedrock-runtime.us-east-1.amazonaws.com/model/"
           "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream")
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    headers = {"host": "bedrock-runtime.us-east-1.amazonaws.com", "content-type": "application/json",
               "accept": "application/vnd.amazon.eventstream"}
    creds = sigv4.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-tok")
    when = dt.datetime(2026, 12, 2, 19, 4, 24, tzinfo=dt.UTC)
    added = sigv4.Signer("us-east-1", "bedrock").sign("POST", url, headers, body, creds, when)
    assert added["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261202/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, "
        "Signature=bb3324b6209863dc23f692f985e1acae128484933e75811ebcec02d04d287689")
