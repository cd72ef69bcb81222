"""Pure builders of the mock upstream's Gemini answers (v1beta generateContent and its SSE stream)."""

from __future__ import annotations

import json
from typing import Any

from gateway.mock.responses import answer_text, approx_tokens, split_chunks, tool_arguments

THOUGHTS = 5  # every answer "thought" a little: thoughtsTokenCount is billed as output


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") != "user":
            continue
        texts = [p["text"] for p in content.get("parts") or [] if isinstance(p, dict) and "text" in p]
        if texts:
            return " ".join(texts)
    return ""


def wants_tool(body: dict[str, Any]) -> str | None:
    """The first declared function, unless calling is off or a function's result just came."""
    decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    if not decls:
        return None
    if ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode") == "NONE":
        return None
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    if any("functionResponse" in p for p in last.get("parts") or []):
        return None
    return str(decls[0].get("name", "tool"))


SIGNATURE = "bW9jay10aG91Z2h0LXNpZ25hdHVyZQ=="  # Gemini 3 signs its function calls; they must come back


def unsigned_call(body: dict[str, Any]) -> bool:
    """A model turn's function call sent back without its thoughtSignature (Gemini 3 refuses those)."""
    return any("functionCall" in p and p.get("thoughtSignature") != SIGNATURE
               for c in body.get("contents") or [] if c.get("role") == "model" for p in c.get("parts") or [])


def usage(body: dict[str, Any], text: str, cached: int) -> dict[str, Any]:
    prompt = approx_tokens(json.dumps([body.get("systemInstruction"), body.get("contents")]))
    out = approx_tokens(text)
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": out, "thoughtsTokenCount": THOUGHTS,
            "totalTokenCount": prompt + out + THOUGHTS}
    if cached:
        meta["cachedContentTokenCount"] = min(cached, prompt)
    return meta


def generate(body: dict[str, Any], model: str, n_id: int, cached: int = 0) -> dict[str, Any]:
    prompt = last_user_text(body)
    tool = wants_tool(body)
    text = answer_text(prompt)
    parts: list[dict[str, Any]] = ([{"functionCall": {"name": tool, "args": json.loads(tool_arguments(prompt))},
                                     "thoughtSignature": SIGNATURE}] if tool else [{"text": text}])
    n = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": i}
                           for i in range(n)],
            "usageMetadata": usage(body, text, cached), "modelVersion": model, "responseId": f"mockgem{n_id}"}


def stream(body: dict[str, Any], model: str, n_id: int, chunks: int, cached: int = 0) -> list[dict[str, Any]]:
    """The stream's events: text in `chunks` pieces (a function call whole), the last with finishReason."""
    full = generate(body, model, n_id, cached)
    meta = full["usageMetadata"]
    parts = full["candidates"][0]["content"]["parts"]
    pieces = [[{"text": t}] for t in split_chunks(parts[0]["text"], chunks)] if "text" in parts[0] else [parts]
    events = []
    for i, piece in enumerate(pieces):
        cand: dict[str, Any] = {"content": {"role": "model", "parts": piece}, "index": 0}
        last = i == len(pieces) - 1
        if last:
            cand["finishReason"] = "STOP"
        events.append({"candidates": [cand],
                       "usageMetadata": meta if last else {"promptTokenCount": meta["promptTokenCount"]},
                       "modelVersion": model, "responseId": f"mockgem{n_id}"})
    return events


def error(status: int, message: str) -> dict[str, Any]:
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
    return {"error": {"code": status, "message": message, "status": names.get(status, "INTERNAL")}}
