"""Model names and aliases to a `Plan`, decided once per request before limits and cache: the
route, and every target to try in order (weighted choice, then fallbacks), each with its translator."""

from __future__ import annotations

import random
from typing import Literal, NamedTuple

from gateway.config import Config, Deployment, ModelConfig
from gateway.errors import UnknownModel, UnsupportedRoute
from gateway.providers.bedrock import BEDROCK
from gateway.providers.gemini import GEMINI
from gateway.providers.messages_to_chat import MESSAGES_TO_CHAT
from gateway.providers.translate import CHAT_TO_ANTHROPIC, PASSTHROUGH, Translator
from gateway.providers.upstream import Provider
from gateway.providers.via_chat import ChatVia, MessagesVia

# Providers with a wire of their own, reached through chat: (from chat clients, from messages clients).
NATIVE: dict[str, tuple[Translator, Translator]] = {
    "gemini": (ChatVia(GEMINI), MessagesVia(GEMINI)),
    "bedrock": (ChatVia(BEDROCK), MessagesVia(BEDROCK)),
}

Family = Literal["openai", "anthropic"]


class Target(NamedTuple):
    provider: Provider
    model: str  # the name the provider knows
    route: ModelConfig  # the configured model (for per-route settings)
    translator: Translator

    @property
    def translate(self) -> bool:
        return self.translator.translates

    @property
    def deployment(self) -> str:
        """The breaker's name for this deployment."""
        return f"{self.provider.name}/{self.model}"


class RouteFacts(NamedTuple):
    """What the cost layers need to know about a route on one endpoint, computed once per worker."""

    family: Family  # whose compression defaults apply: Anthropic only when every deployment is
    translates: bool  # a chat request goes out as an Anthropic message on some deployment
    billing_model: str  # the first deployment's model ("" = the name the client asked for)
    openai_only: bool = False  # every deployment is OpenAI's own API (it knows prompt_cache_key)


class Plan(NamedTuple):
    route: ModelConfig
    targets: list[Target]
    facts: RouteFacts


class Router:
    def __init__(self, cfg: Config, providers: dict[str, Provider], rng: random.Random | None = None) -> None:
        self.providers = providers
        self.by_name: dict[str, ModelConfig] = {}
        for m in cfg.models:
            for name in (m.name, *m.aliases):
                self.by_name[name] = m
        self.wildcard = self.by_name.pop("*", None)
        self.rng = rng or random.Random()
        self.public_names = sorted(self.by_name)
        self._facts: dict[tuple[int, str], RouteFacts] = {}
        self._fixed: dict[tuple[str, str, str], Plan] = {}

    def resolve(self, model: str) -> ModelConfig:
        route = self.by_name.get(model) or self.wildcard
        if route is None:
            raise UnknownModel(f"The model {model!r} does not exist or is not served by this gateway.",
                               param="model")
        return route

    def facts(self, route: ModelConfig, endpoint: str) -> RouteFacts:
        found = self._facts.get((id(route), endpoint))
        if found is None:
            providers = [self.providers[d.provider] for d in route.deployments]
            if endpoint == "messages":
                found = RouteFacts("anthropic", False, route.deployments[0].model or "")
            else:
                translated = [not p.speaks("openai") and p.speaks("anthropic") for p in providers]
                found = RouteFacts("anthropic" if all(translated) else "openai",
                                   endpoint == "chat" and any(translated),  # only chat is translated
                                   route.deployments[0].model or "",
                                   all(p.kind == "openai" for p in providers))
            self._facts[(id(route), endpoint)] = found
        return found

    def _ordered(self, route: ModelConfig) -> list[Deployment]:
        deps = route.deployments
        if len(deps) == 1:
            return list(deps)
        # Weighted shuffle: the first pick follows the weights, the rest are tried after it.
        pool = list(deps)
        out = []
        while pool:
            pick = self.rng.choices(pool, weights=[d.weight for d in pool])[0]
            out.append(pick)
            pool.remove(pick)
        return out

    def plan(self, model: str, protocol: str, endpoint: str) -> Plan:
        """Every target to try, in order: this model's deployments, then each fallback model's.
        A plan with no weighted choice in it is the same every time: built once, then reused."""
        key = (model, protocol, endpoint)
        fixed = self._fixed.get(key)
        if fixed is not None:
            return fixed
        plan = self._plan(model, protocol, endpoint)
        if all(len(r.deployments) == 1 for r in {id(t.route): t.route for t in plan.targets}.values()) \
                and len(self._fixed) < 10_000:  # bounded: wildcard routes see any name a client sends
            self._fixed[key] = plan
        return plan

    def _plan(self, model: str, protocol: str, endpoint: str) -> Plan:
        route = self.resolve(model)
        routes = [route]
        for name in route.fallbacks:
            fb = self.by_name.get(name)
            if fb is not None and fb not in routes:
                routes.append(fb)
        targets: list[Target] = []
        for r in routes:
            for dep in self._ordered(r):
                provider = self.providers[dep.provider]
                upstream_model = dep.model or (model if r is route else r.name)
                native = NATIVE.get(provider.kind)
                if native is not None:
                    if endpoint in ("chat", "messages"):
                        targets.append(Target(provider, upstream_model, r, native[endpoint == "messages"]))
                elif provider.speaks(protocol):
                    targets.append(Target(provider, upstream_model, r, PASSTHROUGH))
                elif endpoint == "chat" and provider.speaks("anthropic"):
                    targets.append(Target(provider, upstream_model, r, CHAT_TO_ANTHROPIC))
                elif endpoint == "messages" and provider.speaks("openai"):
                    targets.append(Target(provider, upstream_model, r, MESSAGES_TO_CHAT))  # any OpenAI model
        if not targets:
            raise UnsupportedRoute(
                f"The model {model!r} has no deployment that serves this endpoint ({endpoint}).", param="model"
            )
        return Plan(route, targets, self.facts(route, endpoint))

    def model_names(self) -> list[str]:
        return self.public_names
