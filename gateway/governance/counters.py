"""Atomic window and budget counters over the shared store: one Lua script per check on Redis, one
SQLite transaction (BEGIN IMMEDIATE) on the embedded store, so every worker and pod sees one count.

A window counts amounts (requests or tokens) in one-second buckets over the last `window_s` seconds:
a hash of second -> amount on Redis, rows of (key, second) in SQLite. `admit` checks every window and
budget of a request and, only when all of them have room, adds to all of them: no read-then-write
race, and a refusal leaves nothing behind. `adjust` corrects reservations once the real usage is
known, many at once (corrections.py merges them). Budgets are plain integer counters (micro-dollars)
per period.

Errors come out as `StoreUnavailable` (the store's own breaker translates them); the caller decides
between fail-open and fail-closed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any, NamedTuple, Protocol

from redis.crc import key_slot

from gateway.store import StoreUnavailable


class Window(NamedTuple):
    key: str
    limit: int
    amount: int


class Cap(NamedTuple):
    """A budget counter: refuse when spent + amount > limit."""

    key: str
    limit: int
    amount: int
    ttl_s: int


class WindowState(NamedTuple):
    used: int  # before this request
    retry_s: int  # 0: fits; -1: can never fit (amount > limit); else seconds until it would
    reset_s: int  # seconds until the window is empty again


class Verdict(NamedTuple):
    ok: bool
    now: int  # the store's clock (seconds): the bucket a reservation landed in
    windows: list[WindowState]
    spent: list[int]  # each cap's counter before this request


class Counters(Protocol):
    async def admit(self, windows: list[Window], caps: list[Cap]) -> Verdict: ...
    async def adjust(self, windows: list[tuple[int, str, int]], caps: list[tuple[str, int, int]]) -> None: ...
    async def read(self, keys: list[str]) -> list[int]: ...


# KEYS: the window hashes, then the budget counters.
# ARGV: window_s, #windows, #caps, (limit, amount) per window, (limit, amount, ttl) per cap.
ADMIT_LUA = """
local now = tonumber(redis.call('TIME')[1])
local win, nw, nc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local oldest = now - win + 1
local ok = 1
local res = {0, now}
for i = 1, nw do
  local key = KEYS[i]
  local limit, amount = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local flat = redis.call('HGETALL', key)
  local used, newest, secs, vals = 0, 0, {}, {}
  for j = 1, #flat, 2 do
    local s = tonumber(flat[j])
    if s < oldest then
      redis.call('HDEL', key, flat[j])
    else
      local v = tonumber(flat[j + 1])
      used = used + v
      secs[#secs + 1] = s
      vals[s] = v
      if s > newest then newest = s end
    end
  end
  local retry = 0
  if used + amount > limit then
    ok = 0
    if amount > limit then
      retry = -1
    else
      table.sort(secs)
      local need = used + amount - limit
      retry = win
      for _, s in ipairs(secs) do
        need = need - vals[s]
        if need <= 0 then retry = s + win - now; break end
      end
    end
  end
  local reset = 0
  if newest > 0 then reset = newest + win - now end
  res[#res + 1] = used
  res[#res + 1] = retry
  res[#res + 1] = reset
end
local base = 3 + 2 * nw
for j = 1, nc do
  local limit, amount = tonumber(ARGV[base + 3 * j - 2]), tonumber(ARGV[base + 3 * j - 1])
  local spent = tonumber(redis.call('GET', KEYS[nw + j]) or '0')
  if spent + amount > limit then ok = 0 end
  res[#res + 1] = spent
end
if ok == 1 then
  for i = 1, nw do
    redis.call('HINCRBY', KEYS[i], now, ARGV[3 + 2 * i])
    redis.call('EXPIRE', KEYS[i], win + 1)
  end
  for j = 1, nc do
    redis.call('INCRBY', KEYS[nw + j], ARGV[base + 3 * j - 1])
    redis.call('EXPIRE', KEYS[nw + j], ARGV[base + 3 * j])
  end
end
res[1] = ok
return res
"""

# KEYS: token windows, then budget counters (a key may repeat with another second).
# ARGV: window_s, #windows, #caps, (second, delta) per window, (delta, ttl) per cap.
ADJUST_LUA = """
local now = tonumber(redis.call('TIME')[1])
local win, nw, nc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, nw do
  local sec, d = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if sec <= now - win then sec = now end
  if d > 0 or redis.call('HEXISTS', KEYS[i], sec) == 1 then
    if redis.call('HINCRBY', KEYS[i], sec, d) < 0 then redis.call('HSET', KEYS[i], sec, 0) end
    redis.call('EXPIRE', KEYS[i], win + 1)
  end
end
local base = 3 + 2 * nw
for j = 1, nc do
  local d, ttl = tonumber(ARGV[base + 2 * j - 1]), ARGV[base + 2 * j]
  if redis.call('INCRBY', KEYS[nw + j], d) < 0 then redis.call('SET', KEYS[nw + j], 0) end
  if redis.call('TTL', KEYS[nw + j]) < 0 then redis.call('EXPIRE', KEYS[nw + j], ttl) end
end
return 1
"""


def _verdict(raw: list[Any], nw: int) -> Verdict:
    vals = [int(v) for v in raw]
    states = [WindowState(vals[2 + 3 * i], vals[3 + 3 * i], vals[4 + 3 * i]) for i in range(nw)]
    return Verdict(bool(vals[0]), vals[1], states, vals[2 + 3 * nw:])


class RedisCounters:
    """Scripts registered once per worker; redis-py runs EVALSHA and reloads after a SCRIPT FLUSH.

    On a Redis Cluster a script's keys must share one slot. limits.py tags every counter of a
    request with its team (or, without one, its key), so an admit is one script on one master. When
    the keys of one admit still span slots (`two_step_admits` counts them), each slot's group is
    admitted by its own script, all in parallel, and if any group refuses, the groups that admitted
    are rolled back. That never admits past a limit (each counter checks and adds atomically on its
    master); its error is on the refusing side only: until the rollback lands (one round trip) a
    refused request's reservation still counts in the other groups, and a rollback lost to an outage
    leaves one request's amount there until its window slides out (or its budget period ends).
    """

    def __init__(self, client: Any, guard: Any, window_s: int, *, cluster: bool = False) -> None:
        self._r = client
        self._guard = guard  # the store's breaker: `await guard(fn)`, errors -> StoreUnavailable
        self._win = window_s
        self._cluster = cluster
        self._admit = client.register_script(ADMIT_LUA)
        self._adjust = client.register_script(ADJUST_LUA)
        self.two_step_admits = 0

    async def setup(self, connections: int = 8) -> None:
        """Load the scripts and open a few pooled connections before the first burst of requests
        (a burst that must connect first can exceed the store's connect timeout). Best effort."""
        async def warm() -> None:
            await self._r.script_load(ADMIT_LUA)
            await self._r.script_load(ADJUST_LUA)
            await asyncio.gather(*(self._r.ping() for _ in range(connections)))

        try:
            await self._guard(warm)
        except StoreUnavailable:
            pass  # Redis is away at start-up: limits fail open (or closed) until it is back

    async def admit(self, windows: list[Window], caps: list[Cap]) -> Verdict:
        groups = _by_slot(windows, caps) if self._cluster else []
        if len(groups) <= 1:
            return await self._admit_one(windows, caps)
        self.two_step_admits += 1
        verdicts = await asyncio.gather(*(self._admit_one(w, c) for w, c in groups), return_exceptions=True)
        failed = next((v for v in verdicts if isinstance(v, BaseException)), None)
        done = [(g, v) for g, v in zip(groups, verdicts, strict=True) if isinstance(v, Verdict)]
        if failed is None and all(v.ok for _, v in done):
            return _merge(windows, caps, done)
        rollback_w = [(v.now, w.key, -w.amount) for (ws, _), v in done if v.ok for w in ws]
        rollback_c = [(c.key, -c.amount, c.ttl_s) for (_, cs), v in done if v.ok for c in cs]
        if rollback_w or rollback_c:
            try:
                await self.adjust(rollback_w, rollback_c)
            except StoreUnavailable:
                pass  # the bounded error above: one request's amount until its window slides out
        if failed is not None:
            raise failed
        merged = _merge(windows, caps, done)
        return merged._replace(ok=False)

    async def _admit_one(self, windows: list[Window], caps: list[Cap]) -> Verdict:
        keys = [w.key for w in windows] + [c.key for c in caps]
        args: list[int] = [self._win, len(windows), len(caps)]
        for w in windows:
            args += (w.limit, w.amount)
        for c in caps:
            args += (c.limit, c.amount, c.ttl_s)
        raw = await self._guard(lambda: self._admit(keys=keys, args=args))
        return _verdict(raw, len(windows))

    async def adjust(self, windows: list[tuple[int, str, int]], caps: list[tuple[str, int, int]]) -> None:
        if not self._cluster:
            await self._adjust_one(windows, caps)
            return
        # Corrections of many requests are merged (corrections.py): one script per slot, in parallel.
        groups: dict[int, tuple[list[tuple[int, str, int]], list[tuple[str, int, int]]]] = {}
        for w in windows:
            groups.setdefault(key_slot(w[1].encode()), ([], []))[0].append(w)
        for c in caps:
            groups.setdefault(key_slot(c[0].encode()), ([], []))[1].append(c)
        await asyncio.gather(*(self._adjust_one(w, c) for w, c in groups.values()))

    async def _adjust_one(self, windows: list[tuple[int, str, int]], caps: list[tuple[str, int, int]]) -> None:
        keys = [k for _, k, _ in windows] + [k for k, _, _ in caps]
        args: list[int] = [self._win, len(windows), len(caps)]
        for sec, _, d in windows:
            args += (sec, d)
        for _, d, ttl in caps:
            args += (d, ttl)
        await self._guard(lambda: self._adjust(keys=keys, args=args))

    async def read(self, keys: list[str]) -> list[int]:
        if not keys:
            return []
        mget = self._r.mget_nonatomic if self._cluster else self._r.mget
        raw = await self._guard(lambda: mget(keys))
        return [int(v or 0) for v in raw]


def _by_slot(windows: list[Window], caps: list[Cap]) -> list[tuple[list[Window], list[Cap]]]:
    groups: dict[int, tuple[list[Window], list[Cap]]] = {}
    for w in windows:
        groups.setdefault(key_slot(w.key.encode()), ([], []))[0].append(w)
    for c in caps:
        groups.setdefault(key_slot(c.key.encode()), ([], []))[1].append(c)
    return list(groups.values())


def _merge(windows: list[Window], caps: list[Cap], done: list[tuple[tuple[list[Window], list[Cap]], Verdict]]
           ) -> Verdict:
    """One verdict in the caller's order from the verdicts of its slot groups."""
    states: dict[str, WindowState] = {}
    spent: dict[str, int] = {}
    for (ws, cs), v in done:
        states.update(zip((w.key for w in ws), v.windows, strict=True))
        spent.update(zip((c.key for c in cs), v.spent, strict=True))
    ok = all(v.ok for _, v in done)
    now = min(v.now for _, v in done)  # the buckets the settle step corrects (the nearest second)
    return Verdict(ok, now, [states[w.key] for w in windows], [spent[c.key] for c in caps])


SCHEMA = """
CREATE TABLE IF NOT EXISTS gov_window (key TEXT NOT NULL, sec INTEGER NOT NULL, amount INTEGER NOT NULL,
                                       PRIMARY KEY (key, sec)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gov_counter (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL)
                                       WITHOUT ROWID;
"""


def _transaction(c: sqlite3.Connection, fn: Any) -> Any:
    # IMMEDIATE takes the write lock up front: the check and the update are one step for every
    # process on the machine (others wait up to busy_timeout).
    c.execute("BEGIN IMMEDIATE")
    try:
        result = fn(c)
    except BaseException:
        c.execute("ROLLBACK")
        raise
    c.execute("COMMIT")
    return result


def sqlite_admit(c: sqlite3.Connection, win: int, windows: list[Window], caps: list[Cap]) -> Verdict:
    wall = time.time()
    now = int(wall)
    oldest = now - win + 1
    ok = True
    states: list[WindowState] = []
    for w in windows:
        c.execute("DELETE FROM gov_window WHERE key = ? AND sec < ?", (w.key, oldest))
        rows = c.execute("SELECT sec, amount FROM gov_window WHERE key = ? ORDER BY sec", (w.key,)).fetchall()
        used = sum(a for _, a in rows)
        retry = 0
        if used + w.amount > w.limit:
            ok = False
            retry = -1 if w.amount > w.limit else win
            need = used + w.amount - w.limit
            for sec, amount in rows if retry != -1 else ():
                need -= amount
                if need <= 0:
                    retry = sec + win - now
                    break
        states.append(WindowState(used, retry, rows[-1][0] + win - now if rows else 0))
    spent: list[int] = []
    for cap in caps:
        row = c.execute("SELECT value FROM gov_counter WHERE key = ? AND expires > ?", (cap.key, wall)).fetchone()
        value = int(row[0]) if row else 0
        if value + cap.amount > cap.limit:
            ok = False
        spent.append(value)
    if ok:
        for w in windows:
            c.execute("INSERT INTO gov_window VALUES (?, ?, ?) ON CONFLICT (key, sec) DO UPDATE "
                      "SET amount = amount + excluded.amount", (w.key, now, w.amount))
        for cap in caps:
            _add_counter(c, cap.key, cap.amount, cap.ttl_s, wall)
    return Verdict(ok, now, states, spent)


def _add_counter(c: sqlite3.Connection, key: str, delta: int, ttl_s: int, wall: float) -> None:
    c.execute(
        "INSERT INTO gov_counter VALUES (:k, max(0, :d), :exp) ON CONFLICT (key) DO UPDATE SET "
        "value = max(0, CASE WHEN expires <= :now THEN :d ELSE value + :d END), "
        "expires = CASE WHEN expires <= :now THEN :exp ELSE expires END",
        {"k": key, "d": delta, "exp": wall + ttl_s, "now": wall},
    )


def sqlite_adjust(c: sqlite3.Connection, win: int, windows: list[tuple[int, str, int]],
                  caps: list[tuple[str, int, int]]) -> None:
    wall = time.time()
    now = int(wall)
    for sec, key, delta in windows:
        at = now if sec <= now - win else sec  # a bucket that slid out: correct the current one
        if delta > 0:
            c.execute("INSERT INTO gov_window VALUES (?, ?, ?) ON CONFLICT (key, sec) DO UPDATE "
                      "SET amount = amount + excluded.amount", (key, at, delta))
        else:
            c.execute("UPDATE gov_window SET amount = max(0, amount + ?) WHERE key = ? AND sec = ?",
                      (delta, key, at))
    for key, delta, ttl in caps:
        _add_counter(c, key, delta, ttl, wall)


class SqliteCounters:
    """The embedded store's connection pool and breaker, with governance's own two tables."""

    def __init__(self, run: Any, window_s: int) -> None:
        self._run = run  # EmbeddedStore._run: fn(conn) in its thread pool, behind its breaker
        self._win = window_s

    async def setup(self) -> None:
        await self._run(lambda c: c.executescript(SCHEMA))

    async def admit(self, windows: list[Window], caps: list[Cap]) -> Verdict:
        return await self._run(lambda c: _transaction(c, lambda c: sqlite_admit(c, self._win, windows, caps)))

    async def adjust(self, windows: list[tuple[int, str, int]], caps: list[tuple[str, int, int]]) -> None:
        await self._run(lambda c: _transaction(c, lambda c: sqlite_adjust(c, self._win, windows, caps)))

    async def read(self, keys: list[str]) -> list[int]:
        def q(c: sqlite3.Connection) -> list[int]:
            wall = time.time()
            out = []
            for k in keys:
                row = c.execute("SELECT value FROM gov_counter WHERE key = ? AND expires > ?", (k, wall)).fetchone()
                out.append(int(row[0]) if row else 0)
            return out

        return await self._run(q) if keys else []


async def open_counters(store: Any, window_s: int) -> Counters:
    """Counters over the store's own client (Redis) or connection pool (embedded)."""
    from gateway.store.redis import RedisStore

    if isinstance(store, RedisStore):
        redis_counters = RedisCounters(store.client, store.guarded, window_s, cluster=store.cluster)
        await redis_counters.setup()
        return redis_counters
    run = getattr(store, "run", None)
    if run is None:
        raise StoreUnavailable(f"{type(store).__name__} offers no atomic counters")
    counters = SqliteCounters(run, window_s)
    await counters.setup()
    return counters
