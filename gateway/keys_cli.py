"""`gateway keys create|list|update|rotate|revoke`: virtual keys, straight over the shared store.

Works without a running gateway: it opens the store the configuration names (Redis, or the
embedded file) and changes the same records the admin API does. The secret of a new or rotated key
is printed once and never stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from gateway.config import ConfigError, StoreConfig, config_source, load_config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("keys", help="virtual keys: create, list, update, rotate, revoke")
    p.add_argument("--config", "-c", help="YAML or TOML configuration file (names the store)")
    sub = p.add_subparsers(dest="keys_command", required=True)
    c = sub.add_parser("create", help="issue a key (printed once)")
    _key_fields(c)
    c.add_argument("--json", action="store_true", help="print the record as JSON")
    ls = sub.add_parser("list", help="every key (never a secret)")
    ls.add_argument("--json", action="store_true")
    u = sub.add_parser("update", help="change a key's limits, models, team or owner (the secret stays)")
    u.add_argument("id")
    _key_fields(u)
    u.add_argument("--clear", default="", help="comma-separated: rpm, tpm, budget, models, team")
    u.add_argument("--json", action="store_true")
    for name, text in (("rotate", "a new secret for the same key"), ("revoke", "refuse the key everywhere")):
        r = sub.add_parser(name, help=text)
        r.add_argument("id")
        r.add_argument("--json", action="store_true")
        if name == "rotate":
            r.add_argument("--grace-s", type=float, default=0.0,
                           help="seconds the old secret keeps working (default: stops at once)")
    p.set_defaults(func=_run)


def _key_fields(parser: argparse.ArgumentParser) -> None:
    """The options a key is made of, shared by `create` and `update` (absent: not given)."""
    parser.add_argument("--owner")
    parser.add_argument("--team")
    parser.add_argument("--name")
    parser.add_argument("--models", help="comma-separated allowed models (default: all)")
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tpm", type=int)
    parser.add_argument("--budget-usd", type=float)
    parser.add_argument("--budget-period", choices=("day", "month"), default="month")


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config or config_source()[0])
    except ConfigError as exc:
        print(f"gateway keys: configuration error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_main(args, cfg.store))


async def _main(args: argparse.Namespace, store_cfg: StoreConfig) -> int:
    import msgspec

    from gateway.governance.admin import public
    from gateway.governance.keys import KeyStore
    from gateway.store import StoreUnavailable, open_configured

    store = open_configured(store_cfg)
    keys = KeyStore(store)
    try:
        if args.keys_command == "create":
            secret, vk = await keys.create(**_given(args))
            _show({**public(vk), "key": secret}, args.json)
        elif args.keys_command == "list":
            items = [public(vk) for vk in await keys.list()]
            if args.json:
                print(json.dumps(items, indent=2))
            for item in [] if args.json else items:
                state = "revoked" if item.get("revoked") else "active"
                quota = msgspec.json.encode(item.get("quota", {})).decode()
                print(f"{item['id']}  {item['hint']}…  {state:7}  owner={item.get('owner', '')} "
                      f"team={item.get('team') or '-'} quota={quota}")
        elif args.keys_command == "update":
            changes = _changes(args)
            if not changes:
                print("gateway keys: nothing to change", file=sys.stderr)
                return 2
            updated = await keys.update(args.id, **changes)
            if updated is None:
                print(f"gateway keys: no active key {args.id!r}", file=sys.stderr)
                return 1
            _show(public(updated), args.json)
        else:
            result = await (keys.rotate(args.id, args.grace_s) if args.keys_command == "rotate"
                            else keys.revoke(args.id))
            if result is None:
                print(f"gateway keys: no active key {args.id!r}", file=sys.stderr)
                return 1
            if isinstance(result, tuple):
                _show({**public(result[1]), "key": result[0]}, args.json)
            else:
                _show(public(result), args.json)
    except StoreUnavailable as exc:
        print(f"gateway keys: the store is unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    return 0


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The key fields given on the command line, named as `KeyStore.create` and `update` take them."""
    from gateway.governance.settings import Budget

    fields: dict[str, Any] = {f: getattr(args, f) for f in ("owner", "team", "name", "rpm", "tpm")
                              if getattr(args, f) is not None}
    if args.models:
        fields["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.budget_usd is not None:
        fields["budget"] = Budget(args.budget_usd, args.budget_period)
    return fields


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """What `keys update` was given; --clear sets limits (or the team, the model list) to none."""
    changes = _given(args)
    for field in (f.strip() for f in args.clear.split(",") if f.strip()):
        if field not in ("rpm", "tpm", "budget", "models", "team"):
            raise SystemExit(f"gateway keys: --clear takes rpm, tpm, budget, models or team, not {field!r}")
        changes[field] = None
    return changes


def _show(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(item, indent=2))
        return
    for field in ("id", "key", "hint", "owner", "team", "models", "quota", "name"):
        if item.get(field) not in (None, "", {}):
            print(f"{field:8} {item[field]}")
    if item.get("revoked"):
        print(f"revoked  {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(item['revoked']))} UTC")
    if "key" in item:
        print("\nStore the key now: it is not shown again.", file=sys.stderr)
