"""Pure builders of the mock upstream's Bedrock Converse answers, and its check of the SigV4
Authorization header (shape always; the signature itself when the mock knows the secret)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import quote

from gateway.mock.responses import answer_text, approx_tokens, split_chunks, tool_arguments
from gateway.protocol import eventstream
from gateway.providers import sigv4

_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/"
                   r"bedrock/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<sig>[0-9a-f]{64})$")


def check_signature(method: str, path: str, headers: dict[str, str], body: bytes, secret: str) -> str | None:
    """Why the request's SigV4 signature is wrong, or None when it is right (shape only without a secret)."""
    auth = headers.get("authorization", "")
    m = _AUTH.match(auth)
    if m is None:
        return "Authorization header is not AWS4-HMAC-SHA256 for the bedrock service"
    signed = m["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    amz_date = headers.get("x-amz-date", "")
    if amz_date[:8] != m["date"]:
        return "x-amz-date does not match the credential scope"
    if not secret:
        return None
    missing = [h for h in signed if h not in headers]
    if missing:
        return f"signed headers not sent: {missing}"
    creds = sigv4.Credentials(m["key"], secret, headers.get("x-amz-security-token", ""))
    url = "https://" + headers["host"] + quote(path, safe="/%")  # the path as it travelled
    creq, _ = sigv4.canonical_request(method, url, {h: headers[h] for h in signed},
                                      hashlib.sha256(body).hexdigest())
    scope = sigv4.scope(m["date"], m["region"], "bedrock")
    sts = sigv4.string_to_sign(amz_date, scope, creq)
    key = sigv4.signing_key(creds.secret_key, m["date"], m["region"], "bedrock")
    expected = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    if expected != m["sig"]:
        return "The request signature we calculated does not match the signature you provided."
    return None


def last_user_text(body: dict[str, Any]) -> str:
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") != "user":
            continue
        texts = [b["text"] for b in msg.get("content") or [] if isinstance(b, dict) and "text" in b]
        if texts:
            return " ".join(texts)
    return ""


def wants_tool(body: dict[str, Any]) -> str | None:
    tools = (body.get("toolConfig") or {}).get("tools") or []
    if not tools:
        return None
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if any("toolResult" in b for b in last.get("content") or []):
        return None
    return str((tools[0].get("toolSpec") or {}).get("name", "tool"))


def usage(body: dict[str, Any], text: str, cached: int, cache: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """`cache`: (written, read, total prompt tokens) from the cache points (caching.py), else a fixed read."""
    out = approx_tokens(text)
    if cache is not None:
        write, read, total = cache
        uncached = max(1, total - write - read)
        return {"inputTokens": uncached, "outputTokens": out, "totalTokens": uncached + write + read + out,
                "cacheReadInputTokens": read, "cacheWriteInputTokens": write}
    prompt = approx_tokens(json.dumps([body.get("system"), body.get("messages")]))
    read = min(cached, prompt)
    return {"inputTokens": prompt - read, "outputTokens": out, "totalTokens": prompt + out,
            "cacheReadInputTokens": read, "cacheWriteInputTokens": 0}


def converse(body: dict[str, Any], n_id: int, cached: int = 0,
             cache: tuple[int, int, int] | None = None) -> dict[str, Any]:
    prompt = last_user_text(body)
    tool = wants_tool(body)
    text = answer_text(prompt)
    if tool:
        content: list[dict[str, Any]] = [{"toolUse": {"toolUseId": f"tooluse_mock{n_id}", "name": tool,
                                                      "input": json.loads(tool_arguments(prompt))}}]
        stop = "tool_use"
    else:
        content, stop = [{"text": text}], "end_turn"
    return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
            "usage": usage(body, text, cached, cache), "metrics": {"latencyMs": 5}}


def stream(body: dict[str, Any], n_id: int, chunks: int, cached: int = 0,
           cache: tuple[int, int, int] | None = None) -> list[bytes]:
    """converse-stream's event-stream frames (each payload padded with "p", as Bedrock's are)."""
    full = converse(body, n_id, cached, cache)
    block = full["output"]["message"]["content"][0]

    def ev(kind: str, data: dict[str, Any]) -> bytes:
        return eventstream.event(kind, json.dumps({**data, "p": "abcdefgh"}).encode())

    frames = [ev("messageStart", {"role": "assistant"})]
    if "toolUse" in block:
        use = block["toolUse"]
        frames.append(ev("contentBlockStart", {"contentBlockIndex": 0, "start": {
            "toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
        args = json.dumps(use["input"])
        for piece in split_chunks(args, min(chunks, 3)):
            frames.append(ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}))
    else:
        for piece in split_chunks(block["text"], chunks):
            frames.append(ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
    frames.append(ev("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(ev("messageStop", {"stopReason": full["stopReason"]}))
    frames.append(ev("metadata", {"usage": full["usage"], "metrics": {"latencyMs": 5}}))
    return frames


def error_headers(status: int) -> list[tuple[str, str]]:
    kind = {400: "ValidationException", 403: "AccessDeniedException", 429: "ThrottlingException",
            503: "ServiceUnavailableException"}.get(status, "InternalServerException")
    return [("x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")]
