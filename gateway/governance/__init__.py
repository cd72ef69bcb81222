"""Governance: virtual keys, limits and budgets shared by every replica, and request/answer policies.

    part.py      the pipeline parts (Limits, Policies, their null twins) and what builds them
    settings.py  the `governance:` configuration (msgspec structs)
    auth.py      the one key resolver: configured keys, the master key, virtual keys
    keys.py      virtual keys in the shared store (hashed, TTL-cached lookups)
    counters.py  atomic window and budget counters (a Lua script on Redis, one SQLite transaction embedded)
    limits.py    RPM/TPM per key and team, token reservation and correction, 429s with x-ratelimit-*
    prices.py    USD cost of a request (gateway.costs.prices when present, else a small fallback table)
    detect.py    the policy detectors: PII with Luhn, deny-lists, prompt size, injection heuristic
    content.py   where the text lives in each request and answer shape; redaction in place
    policies.py  compiled policy sets per route: redaction and checks before or beside the call (ctx.guards)
    outfilter.py output policies on whole answers and on streams (4 KB / 100 ms windows)
    admin.py     the admin API (keys, spend, counters)
"""
