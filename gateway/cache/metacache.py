"""The MetaCache: four lookup phases in order, first hit wins, and the write-back that feeds them.

    1 intent     normalised last user turn, hashed inside the partition     (no verifier: lossless)
    2 near_miss  token-set Jaccard + order guard vs the partition's recent intents, then the verifier
    3 exact      SHA-256 of the whole canonical request (the only phase for tools, images, JSON, code)
    4 semantic   MiniLM cosine KNN over the partition's vectors >= threshold, then the verifier

Only requests inside one partition (keys.py) are ever compared. The store is optional at every step:
`StoreUnavailable` costs the phase that needed it, never the request. A bounded per-worker L1 holds
entries already seen, so phase 3 repeats skip the network; it is emptied when any worker clears
the cache (the clear travels on the vector change log). Write-back runs after the response and
reuses the lookup's embedding, so a text is embedded at most once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec
import numpy as np

from gateway.cache import intent
from gateway.cache import keys as K
from gateway.cache.cacheability import reusable
from gateway.cache.generations import ALL, Generations
from gateway.cache.groupcommit import GroupCommit
from gateway.cache.recent import Recent, RecentIntents
from gateway.cache.recent import encode as encode_recent
from gateway.cache.replay import reusable_answer
from gateway.cache.semantic import VectorIndex
from gateway.cache.types import (
    ENTRY_CODEC,
    TIERS,
    CacheHit,
    CacheRequest,
    CacheSettings,
    CacheStats,
    Embedder,
    Entry,
    PhaseStats,
    Verifier,
)
from gateway.cache.upkeep import Background, evict
from gateway.cache.verify import verify
from gateway.store import EntryWrite, Store, StoreUnavailable

__all__ = ["TIERS", "CacheHit", "CacheRequest", "CacheSettings", "CacheStats", "MetaCache", "PhaseStats"]

SHARED = "\x00shared"  # the tenant of every request under scope="shared" (no key id looks like it)
EVICT_EVERY = 32


class MetaCache:
    def __init__(
        self,
        store: Store,
        settings: CacheSettings | None = None,
        embedder: Embedder | None = None,
        verifier: Verifier | None = verify,
        overloaded: Callable[[], bool] | None = None,
        generations: Generations | None = None,
    ) -> None:
        self.settings = settings or CacheSettings()
        self.stats = CacheStats()
        self._store = store
        self._embedder = embedder if self.settings.semantic else None
        self._verifier = verifier
        # When the worker is CPU-bound, phase 4 (an embedding) is skipped instead of queued.
        self._overloaded = overloaded
        self._writes = 0
        self._recent = RecentIntents(store, self.settings.near_miss_window)
        self._writer = GroupCommit(store)
        self._l1: OrderedDict[str, Entry] = OrderedDict()
        self.index = VectorIndex(store, on_clear=self._l1.clear)  # another worker's clear empties ours
        self._vecs: OrderedDict[str, np.ndarray] = OrderedDict()  # exact key -> the lookup's vector
        self._bg = Background()  # LRU touches, stale vector removals: never awaited by a lookup
        # The worker passes its refreshed generations; a bare MetaCache (tests, tools) assumes none
        # were ever cleared and sees only its own clears.
        if generations is None:
            generations = Generations(store)
            generations.assume_none()
        self.generations = generations

    # ------------------------------------------------------------------------------ cacheability

    def cacheable(self, req: CacheRequest) -> bool:
        """It may be answered from the cache (no-store requests too: they skip only the write-back)."""
        return self.settings.enabled and not req.no_cache and reusable(req, self.settings.only_temperature_zero)

    def storable(self, req: CacheRequest) -> bool:
        """Its answer may be written back (no-cache requests included: they skip only the lookup)."""
        return self.settings.enabled and not req.no_store and reusable(req, self.settings.only_temperature_zero)

    @property
    def verifier(self) -> Verifier | None:
        return self._verifier

    @property
    def shared_store(self) -> Store:
        return self._store

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    def keys(self, req: CacheRequest) -> K.Keys:
        """Partition, exact key (also the single-flight key) and compared text of a request.

        Computed once per request: the write-back lands in the generation the lookup saw, so an
        answer fetched while a clear happened is not served after it."""
        k = req.keys
        if k is None:
            tenant = SHARED if (req.scope or self.settings.scope) == "shared" else req.tenant
            body = req.body
            k = req.keys = K.compute(tenant, req.endpoint, body, self.generations.salt(body.get("model"), tenant))
        return k

    # ------------------------------------------------------------------------------ lookup

    async def lookup(self, req: CacheRequest) -> CacheHit | None:
        if not self.cacheable(req):
            self.stats.not_cacheable += 1
            return None
        self.stats.lookups += 1
        k = self.keys(req)
        prose = k.text is not None and not k.tools and not intent.looks_structured(k.text)
        toks = intent.tokens(k.text) if prose and k.text is not None else []
        try:
            await self.index.sync()
        except StoreUnavailable:
            self.stats.store_errors += 1
        # One round trip fetches what phases 1 and 3 need (the intent pointer, the exact entry).
        pre: dict[str, bytes | None] = {}
        wanted = [K.intent_key(k.partition, K.signature_digest(" ".join(toks)))] if toks else []
        if k.exact not in self._l1:
            wanted.append(K.entry_key(k.exact))
        if wanted:
            try:
                pre = dict(zip(wanted, await self._store.get_many(wanted), strict=True))
            except StoreUnavailable:
                self.stats.store_errors += 1
        phases = (
            (1, bool(toks), lambda: self._intent(k, toks, pre)),
            (2, bool(toks), lambda: self._near_miss(k, toks)),
            (3, True, lambda: self._exact(k, pre)),
            (4, prose and self._embedder is not None, lambda: self._semantic(req, k)),
        )
        for phase, applicable, run in phases:
            st = self.stats.phases[phase]
            if not applicable:
                st.skips += 1
                continue
            st.lookups += 1
            try:
                hit = await run()
            except StoreUnavailable:
                self.stats.store_errors += 1
                st.skips += 1
                continue
            if hit is not None:
                st.hits += 1
                self.stats.hits += 1
                return hit
        return None

    async def _intent(self, k: K.Keys, toks: list[str], pre: dict[str, bytes | None]) -> CacheHit | None:
        norm = " ".join(toks)
        key = K.intent_key(k.partition, K.signature_digest(norm))
        ptr = pre[key] if key in pre else await self._store.get(key)
        if ptr is None:
            return None
        entry = await self._entry(ptr.decode(), pre)
        # The digest is xxh3: equal stored text makes a collision harmless.
        if entry is None or entry.intent != norm:
            return None
        return self._hit(1, 1.0, k.partition, ptr.decode(), entry)

    async def _near_miss(self, k: K.Keys, toks: list[str]) -> CacheHit | None:
        s = self.settings
        mine = set(toks)
        n, scored = len(mine), []
        for r in await self._recent.get(k.partition):
            m = len(r.token_set)
            if min(n, m) < s.near_miss_threshold * max(n, m):  # Jaccard can't reach the bar
                continue
            # Cheap Jaccard first; the order guard only for pairs already above the bar.
            if intent.jaccard(mine, r.token_set) < s.near_miss_threshold:
                continue
            exact, other, query = r.exact, r.tokens, r.query
            score = intent.near_miss_score(toks, other)
            if score >= s.near_miss_threshold:
                scored.append((score, exact, query))
        scored.sort(reverse=True)
        for score, exact, _query in await self._served(2, k.text or "", [(sc, e, q, None) for sc, e, q in scored[:3]]):
            entry = await self._entry(exact)
            if entry is not None:
                return self._hit(2, score, k.partition, exact, entry)
        return None

    async def _exact(self, k: K.Keys, pre: dict[str, bytes | None]) -> CacheHit | None:
        entry = await self._entry(k.exact, pre)
        return None if entry is None else self._hit(3, 1.0, k.partition, k.exact, entry)

    async def exact_hit(self, k: K.Keys) -> CacheHit | None:
        """Phase 3 alone, for the shared single flight's wait (store errors propagate)."""
        return await self._exact(k, {})

    async def _semantic(self, req: CacheRequest, k: K.Keys) -> CacheHit | None:
        s = self.settings
        if self._embedder is None or k.text is None:
            return None
        if self._overloaded is not None and self._overloaded():
            self.stats.phases[4].skips += 1
            self.stats.overload_skips += 1
            return None
        vec = await self._embedder.embed_one(k.text, budget_ms=s.embed_budget_ms)
        if vec is None:  # saturated or over budget: skip rather than delay the request
            self.stats.phases[4].skips += 1
            return None
        self._remember_vec(k.exact, vec)
        self.stats.semantic_searches += 1
        threshold = req.semantic_threshold if req.semantic_threshold is not None else s.semantic_threshold
        # A learned verifier judges candidates well below the plain threshold: its own cosine floor
        # (chosen for recall) lets them through to it, unless the route set a threshold.
        floor = getattr(self._verifier, "cosine_floor", None) if s.verifier else None
        if floor is not None and req.semantic_threshold is None:
            threshold = floor
        found: list[tuple[float, str, str, float | None]] = []
        entries: dict[str, Entry] = {}
        for exact, cosine in await self.index.knn(k.partition, vec, s.knn_k, threshold):
            entry = await self._entry(exact)
            if entry is None:  # expired or evicted: forget the stale vector everywhere
                self.index.remove_local(k.partition, exact)
                self._bg.spawn(self._store.vec_remove(k.partition, [exact]))
                continue
            entries[exact] = entry
            found.append((cosine, exact, entry.query, cosine))
        for cosine, exact, _query in await self._served(4, k.text, found):
            return self._hit(4, cosine, k.partition, exact, entries[exact])
        return None

    async def _served(self, phase: int, query: str, cands: list[tuple[float, str, str, float | None]]
                      ) -> list[tuple[float, str, str]]:
        """The candidates (score, exact, stored query, cosine) the verifier accepts, in the order given.

        A verifier with `judge` (the cross-encoder) sees a phase's candidates in one batch; it may
        judge only the best that fit its budget, or none, which makes the phase a miss (`unjudged`)."""
        if not cands:
            return []
        if not self.settings.verifier or self._verifier is None:
            return [c[:3] for c in cands]
        judge = getattr(self._verifier, "judge", None)
        if judge is not None:
            verdicts = await judge(query, [(c[2], c[3]) for c in cands])
            if verdicts is None:
                self.stats.phases[phase].unjudged += 1
                return []
        else:
            verdicts = [self._verifier(query, c[2], c[3]) for c in cands]
        # A judge may answer for a prefix only (the best candidates that fit its budget).
        out = [c[:3] for c, v in zip(cands, verdicts, strict=False) if v.ok]
        self.stats.phases[phase].vetoes += len(verdicts) - len(out)
        return out

    def _hit(self, phase: int, similarity: float, partition: str, exact: str, entry: Entry) -> CacheHit:
        # LRU bookkeeping is off the hit path.
        self._bg.spawn(self._store.lru_touch(K.LRU_GROUP, K.lru_member(partition, exact)))
        return CacheHit(
            phase=phase,
            tier=TIERS[phase],
            similarity=round(min(similarity, 1.0), 4),
            query=entry.query,
            response=entry.response,
            tokens_saved=entry.tokens_saved,
        )

    async def _entry(self, exact: str, pre: dict[str, bytes | None] | None = None) -> Entry | None:
        now = time.time()
        entry = self._l1.get(exact)
        if entry is not None:
            if entry.expires > now:
                self._l1.move_to_end(exact)
                return entry
            del self._l1[exact]
        key = K.entry_key(exact)
        raw = pre[key] if pre is not None and key in pre else await self._store.get(key)
        if raw is None:
            return None
        try:
            entry = ENTRY_CODEC[1].decode(raw)
        except msgspec.DecodeError:
            return None  # written by an incompatible version: a miss, overwritten on write-back
        self._l1_put(exact, entry)
        return entry

    # ------------------------------------------------------------------------------ write-back

    async def store(self, req: CacheRequest, response: bytes) -> None:
        """Write a fresh upstream answer back. Call it after responding; it never raises."""
        if not self.storable(req):
            self.stats.not_stored += 1
            return
        tokens_saved = reusable_answer(response) if len(response) <= self.settings.max_entry_bytes else None
        if tokens_saved is None:
            self.stats.not_stored += 1
            return
        s, k = self.settings, self.keys(req)
        prose = k.text is not None and not k.tools and not intent.looks_structured(k.text)
        norm = " ".join(intent.tokens(k.text)) if prose and k.text is not None else ""
        entry = Entry(
            query=k.text or "",
            intent=norm,
            response=response,
            tokens_saved=tokens_saved,
            expires=time.time() + s.ttl_s,
        )
        pointer = recent = None
        if norm:
            pointer = (K.intent_key(k.partition, K.signature_digest(norm)), k.exact.encode())
            item = encode_recent(k.exact, norm, entry.query)
            recent = (K.recent_key(k.partition), item, s.near_miss_window)
        try:
            await self._writer.put(EntryWrite((K.entry_key(k.exact), ENTRY_CODEC[0].encode(entry)), pointer, recent,
                                       (K.LRU_GROUP, K.lru_member(k.partition, k.exact)), s.ttl_s))
            self._l1_put(k.exact, entry)
            if norm:
                self._recent.remember(k.partition, Recent.of(k.exact, norm, entry.query))
            if prose and self._embedder is not None and k.text is not None:
                await self._store_vector(k.partition, k.exact, k.text)
            # Counting the LRU set costs a scan: trim every few writes, overshooting the cap by at
            # most ~1.5% (and never more than EVICT_EVERY entries) per worker.
            self._writes += 1
            if self._writes % min(EVICT_EVERY, max(1, s.max_entries // 64)) == 0:
                self.stats.evicted += await evict(self._store, s.max_entries, self._l1, self.index)
            self.stats.stored += 1
        except StoreUnavailable:
            self.stats.store_errors += 1

    async def _store_vector(self, partition: str, exact: str, text: str) -> None:
        embedder = self._embedder
        assert embedder is not None
        vec = self._vecs.pop(exact, None)
        if vec is None and hasattr(embedder, "cached"):
            vec = embedder.cached(text)  # the embedder's own LRU, e.g. a lookup by another MetaCache
        if vec is None and self._overloaded is not None and self._overloaded():
            return  # CPU-bound: no embedding for the write-back either (phases 1-3 still serve it)
        if vec is None:  # the lookup skipped phase 4; off the request path we can afford to wait
            vec = await embedder.embed_one(text, budget_ms=self.settings.write_embed_budget_ms)
        if vec is None:
            return
        vec = np.ascontiguousarray(vec, dtype=np.float32)
        await self._store.vec_add(partition, exact, vec.tobytes(), self.settings.ttl_s)
        self.index.add_local(partition, exact, vec)

    # ------------------------------------------------------------------------------ housekeeping

    async def clear(self, scopes: list[str] | None = None) -> float:
        """Make the scopes' entries unreachable everywhere (generations.py); "*" also deletes them, narrower
        scopes age out by TTL and LRU. Returns the wall-clock time of the clear."""
        scopes = scopes or [ALL]
        gen = await self.generations.bump(scopes)
        if ALL in scopes:
            self._l1.clear()
            self.index.clear()
            await self._store.clear(K.PREFIX)
        return gen.at

    def _l1_put(self, exact: str, entry: Entry) -> None:
        if len(entry.response) > self.settings.l1_entry_bytes:
            return  # bounded memory: l1_entries of these could be gigabytes per worker
        self._l1[exact] = entry
        self._l1.move_to_end(exact)
        while len(self._l1) > self.settings.l1_entries:
            self._l1.popitem(last=False)

    def _remember_vec(self, exact: str, vec: np.ndarray) -> None:
        self._vecs[exact] = vec
        while len(self._vecs) > 4096:
            self._vecs.popitem(last=False)

    async def drain(self) -> None:
        """Wait for background bookkeeping (tests, shutdown)."""
        await self._bg.drain()
