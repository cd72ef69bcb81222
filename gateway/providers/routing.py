"""Model names and aliases to an ordered plan of deployments: weighted choice, then fallbacks."""

from __future__ import annotations

import random
from typing import NamedTuple

from gateway.config import Config, ModelConfig
from gateway.errors import UnknownModel, UnsupportedRoute
from gateway.providers.upstream import Provider


class Target(NamedTuple):
    provider: Provider
    model: str  # the name the provider knows
    route: ModelConfig  # the configured model (for per-route settings)
    translate: bool  # OpenAI chat sent to an Anthropic-only provider


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

    def resolve(self, model: str) -> ModelConfig:
        route = self.by_name.get(model) or self.wildcard
        if route is None:
            raise UnknownModel(f"The model {model!r} does not exist or is not served by this gateway.",
                               param="model")
        return route

    def _ordered(self, route: ModelConfig) -> list:
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

    def plan(self, model: str, protocol: str, endpoint: str) -> list[Target]:
        """Every target to try, in order: this model's deployments, then each fallback model's."""
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
                if provider.speaks(protocol):
                    targets.append(Target(provider, upstream_model, r, False))
                elif endpoint == "chat" and provider.speaks("anthropic"):
                    targets.append(Target(provider, upstream_model, r, True))
        if not targets:
            raise UnsupportedRoute(
                f"The model {model!r} has no deployment that serves this endpoint ({endpoint}).", param="model"
            )
        return targets

    def model_names(self) -> list[str]:
        return self.public_names
