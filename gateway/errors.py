"""The one error tree of the gateway and its rendering in each client protocol.

    GatewayError                       500 api_error
    ├── BadRequest                     400 invalid_request_error
    │   ├── MalformedBody              400   (not JSON, wrong types, too deep)
    │   ├── ModelRequired              400   (no "model" field)
    │   ├── PolicyViolation            400   (a content policy blocked the request or answer)
    │   └── UnsupportedRoute           400   (endpoint not served by any deployment of the model)
    ├── Unauthorized                   401 authentication_error
    ├── PermissionDenied               403 permission_error
    ├── NotFound                       404 not_found_error
    │   └── UnknownModel               404 model_not_found
    ├── RequestTimeout                 408 request_timeout      (the client sent its body too slowly)
    ├── PayloadTooLarge                413 request_too_large
    ├── RateLimited                    429 rate_limit_error
    │   └── BudgetExceeded             429   (a key's or team's spend budget is used up)
    ├── UpstreamError                  502 upstream_error       (base of everything a provider caused)
    │   ├── UpstreamUnreachable        502   (connect refused, DNS, reset before the answer)
    │   ├── UpstreamTimeout            504   (connect, first-byte or total timeout)
    │   └── UpstreamStatus             any   (provider answered 4xx/5xx: status and body passed through)
    └── ServiceUnavailable             503 overloaded_error
        ├── Overloaded                 503   (the worker's in-flight bound is reached: shed at once)
        ├── PoolExhausted              503   (no upstream connection free within the pool's wait bound)
        └── DeploymentsEjected         503   (every deployment of the route is ejected by its breaker)

Class attributes give each error its status, type and code. Foreign exceptions are mapped to this
tree at exactly one boundary each (aiohttp in providers/upstream.py, msgspec in protocol/*).
`render(error, protocol)` turns any of them into the caller's own error shape.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

Protocol = Literal["openai", "anthropic"]
Wire = Literal["openai", "anthropic", "gemini", "bedrock"]  # a provider's error shape (clients speak Protocol)

_json = msgspec.json.Encoder()


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str | None] = None
    # The Anthropic error type for this status (Anthropic names its types differently).
    anthropic_type: ClassVar[str] = "api_error"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def http_status(self) -> int:
        return self.status


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class MalformedBody(BadRequest):
    code = "invalid_json"


class ModelRequired(BadRequest):
    code = "model_required"


class UnsupportedRoute(BadRequest):
    code = "unsupported_route"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    anthropic_type = "authentication_error"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"
    anthropic_type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    anthropic_type = "not_found_error"


class UnknownModel(NotFound):
    code = "model_not_found"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    anthropic_type = "timeout_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    anthropic_type = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    anthropic_type = "rate_limit_error"


class BudgetExceeded(RateLimited):
    code = "budget_exceeded"


class PolicyViolation(BadRequest):
    code = "content_policy_violation"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"
    anthropic_type = "overloaded_error"


class Overloaded(ServiceUnavailable):
    code = "overloaded"


class PoolExhausted(ServiceUnavailable):
    code = "upstream_pool_exhausted"


class DeploymentsEjected(ServiceUnavailable):
    code = "deployments_unavailable"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "bad_gateway"
    anthropic_type = "api_error"
    # Retrying (or falling back) is sensible before the first byte reached the client.
    retryable: ClassVar[bool] = True


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    anthropic_type = "timeout_error"


class UpstreamStatus(UpstreamError):
    """The provider answered with an error status; its body and status are passed through."""

    def __init__(
        self,
        status: int,
        body: bytes,
        *,
        protocol: Wire,
        headers: dict[str, str] | None = None,
        provider: str = "",
    ):
        super().__init__(f"{provider or 'upstream'} answered {status}", headers=headers)
        self.upstream_status = status
        self.body = body
        self.protocol = protocol

    @property
    def http_status(self) -> int:
        return self.upstream_status

    @property
    def is_retryable(self) -> bool:
        return self.upstream_status == 429 or self.upstream_status >= 500


_ANTHROPIC_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def _upstream_message(err: UpstreamStatus) -> str:
    """Pull the provider's own message out of its error body, whatever its shape."""
    try:
        data = msgspec.json.decode(err.body)
    except (msgspec.DecodeError, RecursionError):  # whatever the provider sent, render() never raises
        text = err.body[:500].decode("utf-8", "replace").strip()
        return text or err.message
    if isinstance(data, dict):
        inner = data.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return err.message


def render(err: GatewayError, protocol: Protocol) -> tuple[int, bytes]:
    """The status and body of `err` in the caller's protocol shape."""
    status = err.http_status
    if isinstance(err, UpstreamStatus):
        if err.protocol == protocol:
            return status, err.body  # same protocol: the provider's own error, untouched
        message = _upstream_message(err)
        if protocol == "anthropic":
            etype = _ANTHROPIC_BY_STATUS.get(status, "api_error")
            return status, _json.encode({"type": "error", "error": {"type": etype, "message": message}})
        otype = _OPENAI_BY_STATUS.get(status, "api_error")
        return status, _json.encode({"error": {"message": message, "type": otype, "param": None, "code": None}})
    if protocol == "anthropic":
        body = {"type": "error", "error": {"type": err.anthropic_type, "message": err.message}}
        return status, _json.encode(body)
    return status, _json.encode(
        {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    )
