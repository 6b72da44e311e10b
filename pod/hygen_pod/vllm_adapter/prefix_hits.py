"""Prefix-cache hits as vLLM's base method will find them later in the same step.

HyGen plans a prompt from the tokens vLLM will find cached for it. Two things make that
more than one call to vLLM: prompts planned earlier in the step will have cached their
full blocks by the time the base method reaches a later one (vLLM's ``allocate_slots``
caches them), so prompts that share a prefix start as their suffixes; and vLLM's own
lookup costs 14-24 us for a 200-token prompt, several times a step on a busy server
(docs/benchmarks.md, "Scheduler overhead"), where the same walk done here costs 3-4.

`PrefixHits` keeps the step's pending blocks and answers with vLLM's own
``find_longest_cache_hit`` over a view of the block pool that counts them, or, where the
KV cache has the one layout whose lookup is a plain walk (one full-attention group,
hashed at its block size, no EAGLE drop, no context parallelism, no KV connector), with
that walk. A test compares the two on random caches and pending sets.
"""

from __future__ import annotations

from typing import Any

from vllm.v1.core.kv_cache_coordinator import UnitaryKVCacheCoordinator
from vllm.v1.core.kv_cache_utils import make_block_hash_with_group_id
from vllm.v1.core.single_type_kv_cache_manager import FullAttentionManager
from vllm.v1.request import Request


class _PendingPool:
    """The KV block pool as the base method will see it later in this step: a block that
    a prompt planned earlier in the step will have cached by then counts as cached. Its
    stand-in blocks are only counted, never used."""

    __slots__ = ("_pending", "_pool")

    def __init__(self, pool: Any, pending: set[Any]) -> None:
        self._pool, self._pending = pool, pending

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def get_cached_block(self, block_hash: Any, kv_cache_group_ids: list[int]) -> Any:
        got = self._pool.get_cached_block(block_hash, kv_cache_group_ids)
        if got is None and block_hash in self._pending:
            return [None] * len(kv_cache_group_ids)
        return got


class PrefixHits:
    """The prefix-cache hits of one scheduler's prompts, this step's pending blocks
    included. ``same_step`` says whether pending blocks are tracked at all (where that is
    exact); ``walk`` whether the plain walk answers instead of vLLM's lookup."""

    def __init__(self, kv_cache_manager: Any, connector: Any, dcp: int, pcp: int) -> None:
        coord = kv_cache_manager.coordinator
        spec = getattr(coord, "kv_cache_spec", None)
        self._coord = coord
        self._block_size = getattr(spec, "block_size", 0)
        self.pending: set[Any] = set()
        self.same_step = bool(
            isinstance(coord, UnitaryKVCacheCoordinator)
            and self._block_size == coord.block_pool.hash_block_size
            and connector is None
            and dcp == 1
            and pcp == 1
            and kv_cache_manager.enable_caching
        )
        # The walk is vLLM 0.32's/0.33's FullAttentionManager lookup for one group whose
        # hashes are at its block size (no fine-grained view, no DCP scaling, no EAGLE
        # drop): the longest run of cached full blocks, at most (max_length // bs).
        self._suffix = make_block_hash_with_group_id(b"", 0)
        managers = getattr(coord, "single_type_managers", ())
        self.walk = (
            self.same_step
            and len(managers) == 1
            and type(managers[0]) is FullAttentionManager
            and getattr(coord, "eagle_group_ids", None) == set()  # known, and none
            and make_block_hash_with_group_id(b"\x01", 0) == b"\x01" + self._suffix
        )

    def clear(self) -> None:
        """A new step (or a planning attempt given up): nothing is pending."""
        if self.pending:
            self.pending.clear()

    def note(self, request: Request, computed: int, n: int) -> None:
        """A prompt chunk planned for this step: the full blocks it will have cached
        (``allocate_slots`` caches up to computed + new tokens) count as hits for prompts
        the base method starts after it."""
        if self.same_step:
            k = min(computed + n, request.num_tokens) // self._block_size
            if k:
                self.pending.update(request.block_hashes[:k])

    def tokens(self, request: Request) -> int:
        """Tokens of ``request`` (none computed, prefix caching on for it) that vLLM's
        ``get_computed_blocks`` will find cached when the base method reaches it, as that
        method counts them, without its side effects (KV cache events, stats)."""
        if self.walk:
            return self._walk(request)
        return self.vllm_tokens(request)

    def vllm_tokens(self, request: Request) -> int:
        """`tokens` through vLLM's own ``find_longest_cache_hit`` (the reference)."""
        coord = self._coord
        if not self.pending:
            return coord.find_longest_cache_hit(request.block_hashes, request.num_tokens - 1)[1]
        pool = coord.block_pool
        coord.block_pool = _PendingPool(pool, self.pending)
        try:
            return coord.find_longest_cache_hit(request.block_hashes, request.num_tokens - 1)[1]
        finally:
            coord.block_pool = pool

    def _walk(self, request: Request) -> int:
        bs = self._block_size
        get = self._coord.block_pool.cached_block_hash_to_block.get_one_block
        pending, suffix = self.pending, self._suffix
        n = 0
        for h in request.block_hashes[: (request.num_tokens - 1) // bs]:
            if get(h + suffix) is None and h not in pending:
                break
            n += 1
        return n * bs
