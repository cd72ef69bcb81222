"""`gateway cache stats|clear`: the MetaCache's operator commands, straight over the shared store.

Works without a running gateway: it opens the store the configuration names (Redis, or the
embedded file) and does what `/admin/cache/*` does. A clear reaches every worker and pod within a
second. Hit rates live in the workers' metrics: `stats --url URL` asks a running gateway for its
pod's whole report (with the master key from the configured environment variable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from gateway.config import Config, ConfigError, config_source, load_config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("cache", help="the MetaCache: stats, clear")
    p.add_argument("--config", "-c", help="YAML or TOML configuration file (names the store)")
    sub = p.add_subparsers(dest="cache_command", required=True)
    s = sub.add_parser("stats", help="entries, hit rate per phase, wrong-rate bound, memory")
    s.add_argument("--url", help="a running gateway: its pod's hit rates and vector index (admin API)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    c = sub.add_parser("clear", help="stop serving cached answers, on every worker and pod within a second")
    c.add_argument("--model", help="only requests naming this model (a route: its aliases too)")
    c.add_argument("--key", help="only this key's entries (key id; shared-scope entries belong to no key)")
    c.add_argument("--json", action="store_true")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config or config_source()[0])
    except ConfigError as exc:
        print(f"gateway cache: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.cache_command == "stats" and args.url:
        return _remote_stats(args, cfg)
    return asyncio.run(_main(args, cfg))


async def _main(args: argparse.Namespace, cfg: Config) -> int:
    import msgspec

    from gateway.cache import ops
    from gateway.cache.classifier import LearnedVerifier
    from gateway.cache.generations import Generations
    from gateway.cache.metacache import MetaCache
    from gateway.store import StoreUnavailable, open_configured

    store = open_configured(cfg.store)
    generations = Generations(store)
    cache = MetaCache(store, cfg.cache, embedder=None, generations=generations)
    try:
        if args.cache_command == "clear":
            req = ops.ClearRequest(model=args.model, key=args.key)
            problem = ops.check(req)
            if problem is not None:
                print(f"gateway cache: {problem}", file=sys.stderr)
                return 2
            cleared = await ops.clear(cache, req, cfg.models)
            if args.json:
                print(json.dumps(msgspec.to_builtins(cleared), indent=2))
            else:
                print(f"cleared {', '.join(cleared.scopes)}: every worker and pod stops serving "
                      f"{'them' if len(cleared.scopes) > 1 else 'it'} within {cleared.propagation_s:g} s"
                      + (" (entries deleted)" if cleared.deleted else " (old entries age out by TTL and LRU)"))
        else:
            verifier = LearnedVerifier.load_or_none(cfg.cache.max_wrong_rate) if cfg.cache.verifier else None
            rates = ops.Rates(source="none (ask a running gateway with --url)", lookups=0, hits=0, hit_rate=None,
                              phases={})
            report = await ops.stats(cache, cfg.cache, verifier, rates, None)
            _show(report, args.json)
    except StoreUnavailable as exc:
        print(f"gateway cache: the store is unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        await cache.drain()
        await store.close()
    return 0


def _remote_stats(args: argparse.Namespace, cfg: Config) -> int:
    import msgspec

    from gateway.cache import ops

    headers = {}
    master = os.environ.get(cfg.auth.master_key_env)
    if master:
        headers["authorization"] = f"Bearer {master}"
    request = urllib.request.Request(args.url.rstrip("/") + "/admin/cache/stats", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            report = msgspec.json.decode(resp.read(), type=ops.StatsReport)
    except urllib.error.HTTPError as exc:
        print(f"gateway cache: {args.url} answered {exc.code}: {exc.read()[:500].decode(errors='replace')}",
              file=sys.stderr)
        return 1
    except (OSError, msgspec.DecodeError) as exc:
        print(f"gateway cache: cannot read stats from {args.url}: {exc}", file=sys.stderr)
        return 1
    _show(report, args.json)
    return 0


def _show(report: Any, as_json: bool) -> None:
    import msgspec

    from gateway.cache import ops

    if as_json:
        print(json.dumps(msgspec.to_builtins(report), indent=2))
    else:
        print(ops.render(report))
