"""The interfaces of the pipeline's parts. Each capability provides one implementation and a null
twin (same interface, does nothing) for when it is off; the worker builds them once."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from gateway.governance.auth import KeyRecord
from gateway.pipeline.context import CacheOutcome, RequestContext


class Auth(Protocol):
    async def resolve(self, headers: Mapping[str, str], model: str | None = None) -> KeyRecord: ...


class Limits(Protocol):
    async def admit(self, ctx: RequestContext) -> None: ...

    def settle(self, ctx: RequestContext) -> None: ...


class Policies(Protocol):
    async def start(self, ctx: RequestContext) -> None: ...

    def finish(self, ctx: RequestContext) -> None: ...


class Flight(Protocol):
    hit: CacheOutcome | None

    def publish(self, ctx: RequestContext) -> None: ...


class Cache(Protocol):
    def flight(self, ctx: RequestContext) -> AbstractAsyncContextManager[Flight]: ...


class Transform(Protocol):
    async def apply(self, ctx: RequestContext) -> None: ...

    async def count_tokens_saved(self, ctx: RequestContext) -> None: ...


class Costs(Protocol):
    def account(self, ctx: RequestContext) -> None: ...


class Observe(Protocol):
    @property
    def wants_events(self) -> bool: ...

    def record(self, ctx: RequestContext) -> None: ...
