"""Offline request queue: depth-first order over a prefix trie, with a starvation guard.

Depth-first traversal of a trie whose children are ordered by token id visits
requests in lexicographic order of their token sequences, and the deepest trie
node two requests share is their longest common prefix (LCP). So the trie is
kept implicitly as a sorted array of token tuples: the next request is the
neighbour of the last one popped (the "cursor") that shares the longest prefix
with it, ties going forward. Requests that share a prefix therefore run back to
back, which is what vLLM's prefix cache rewards, and memory stays O(total tokens)
instead of one node per token.

Starvation guard (the stated bound): no request is overtaken by more than
``max_bypass`` requests that arrived after it. Overtakes of a waiting request r
are counted as the pops of newer requests while r waits; that count is largest
for the oldest waiting request, so checking the oldest before each pop keeps
every request within the bound. An optional wall-clock bound ``max_wait_s``
pops the oldest request once it has waited that long.
"""

from __future__ import annotations

import bisect
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    key: tuple[int, ...]
    packed: bytes  # sort_key(key)
    seq: int
    item: T
    enqueued_at: float = 0.0


_FLIP_SIGN = bytes(b ^ 0x80 for b in range(256))


def sort_key(tokens: tuple[int, ...]) -> bytes:
    """Token ids as big-endian 32-bit words with the sign bit flipped: bytes order is the
    tuples' lexicographic order (the simulator keys unique prompts by negative ids).

    Bisecting bytes compares with one memcmp; tuples of 200 tokens that share 192
    compare element by element, which cost about 38 us per started offline prompt at
    256 running requests with churn (docs/benchmarks.md, "Scheduler overhead").
    """
    try:
        packed = bytearray(struct.pack(f">{len(tokens)}i", *tokens))
    except struct.error as e:
        raise ValueError(f"token ids must be integers in [-2**31, 2**31): {e}") from None
    packed[0::4] = packed[0::4].translate(_FLIP_SIGN)
    return bytes(packed)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    # Compare in strides first: tuples compare slices at C speed.
    step = 64
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


class OfflineQueue(Generic[T]):
    """Prefix-sharing order with bounded overtaking.

    ``add`` takes an item id, its prompt token ids and the item; ``pop`` returns
    the next item. Items pushed back with ``push_front`` (e.g. preempted offline
    requests that already made progress) are served first, FIFO, and keep
    their original arrival order for the starvation guard.
    """

    def __init__(
        self,
        max_bypass: int = 64,
        max_wait_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bypass < 0:
            raise ValueError("max_bypass must be >= 0")
        self.max_bypass = max_bypass
        self.max_wait_s = max_wait_s
        self._clock = clock
        # The trie, in DFS (lexicographic) order: (sort_key(tokens), seq) of each entry.
        # Plain tuples of bytes, so bisect compares them in C with a memcmp (a dataclass's
        # __lt__ is a Python call per step of the search, 10-15 us a pop at 3,000 queued
        # 200-token prompts; token tuples compare element by element).
        self._sorted: list[tuple[bytes, int]] = []
        self._by_id: dict[str, _Entry[T]] = {}
        self._ids: dict[int, str] = {}  # seq -> id
        self._arrivals: deque[int] = deque()  # seqs in arrival order (lazy deletion)
        self._front: deque[str] = deque()  # pushed-back ids, served first
        self._front_items: dict[str, T] = {}
        self._cursor: tuple[int, ...] | None = None
        self._cursor_key = b""  # sort_key(self._cursor)
        self._next_seq = 0
        # Seqs of pops that overtook the oldest waiting entry, sorted (see module doc).
        self._overtakes: list[int] = []
        self.guard_pops = 0  # how often the starvation guard decided
        # The last choice, valid while nothing changed (``_version``) and, for one the
        # wall-clock guard did not make, until the oldest entry's wait reaches the bound:
        # the scheduler peeks at an unchanged queue every step.
        self._version = 0
        self._choice: tuple[int, str | None, bool, float | None] | None = None

    # ---------------------------------------------------------------- state
    def __len__(self) -> int:
        return len(self._by_id) + len(self._front_items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._by_id or item_id in self._front_items

    def ids(self) -> list[str]:
        return [*self._front_items, *self._by_id]

    def add(self, item_id: str, tokens: Iterable[int], item: T) -> None:
        if item_id in self._by_id:
            raise ValueError(f"duplicate offline request id {item_id!r}")
        seq = self._next_seq
        self._next_seq += 1
        key = tuple(tokens)
        entry = _Entry(key, sort_key(key), seq, item, self._clock())
        self._version += 1
        self._insert(item_id, entry)
        self._arrivals.append(seq)

    def push_front(self, item_id: str, item: T) -> None:
        """Re-queue an item that already ran (e.g. a preempted request): served first, FIFO.

        Re-queued items are resumptions, not new admissions, so they are outside the
        prefix order and do not count as overtaking anyone.
        """
        if item_id in self._by_id or item_id in self._front_items:
            raise ValueError(f"duplicate offline request id {item_id!r}")
        self._version += 1
        self._front_items[item_id] = item
        self._front.append(item_id)

    def remove(self, item_id: str) -> T | None:
        """Drop an item (e.g. aborted); returns it, or None when absent."""
        self._version += 1
        if item_id in self._front_items:
            return self._front_items.pop(item_id)
        entry = self._by_id.pop(item_id, None)
        if entry is None:
            return None
        self._delete_sorted(entry)
        self._ids.pop(entry.seq, None)
        self._advance_oldest()
        return entry.item

    # ----------------------------------------------------------------- order
    def peek(self) -> T | None:
        item_id, _ = self._choose()
        if item_id is None:
            return None
        if item_id in self._front_items:
            return self._front_items[item_id]
        return self._by_id[item_id].item

    def pop(self) -> T | None:
        item_id, guarded = self._choose()
        if item_id is None:
            return None
        self._version += 1
        if item_id in self._front_items:
            self._front.popleft()
            return self._front_items.pop(item_id)
        entry = self._by_id.pop(item_id)
        self._delete_sorted(entry)
        self._ids.pop(entry.seq, None)
        oldest = self._oldest_seq()
        if oldest is not None and entry.seq > oldest:
            bisect.insort(self._overtakes, entry.seq)
        elif guarded:
            self.guard_pops += 1
        self._cursor = entry.key
        self._cursor_key = entry.packed
        self._advance_oldest()
        return entry.item

    def pop_many(self, n: int) -> list[T]:
        out: list[T] = []
        while len(out) < n:
            item = self.pop()
            if item is None:
                break
            out.append(item)
        return out

    def overtakes_of_oldest(self) -> int:
        """How many newer requests have overtaken the oldest waiting one."""
        return len(self._overtakes)

    # -------------------------------------------------------------- internals
    def _choose(self) -> tuple[str | None, bool]:
        """The next id, and whether the starvation guard chose it (the last answer while
        it still holds)."""
        c = self._choice
        if c is not None and c[0] == self._version:
            since = c[3]
            if since is None or self._clock() - since < self.max_wait_s:  # type: ignore[operator]
                return c[1], c[2]
        item_id, guarded = self._choose_now()
        since = None
        if not guarded and self.max_wait_s is not None and item_id not in self._front_items:
            oldest = self._oldest_seq()
            if oldest is not None:
                since = self._by_id[self._ids[oldest]].enqueued_at
        self._choice = (self._version, item_id, guarded, since)
        return item_id, guarded

    def _choose_now(self) -> tuple[str | None, bool]:
        while self._front and self._front[0] not in self._front_items:
            self._front.popleft()
        if self._front:
            return self._front[0], False
        if not self._by_id:
            return None, False
        oldest = self._oldest_seq()
        assert oldest is not None
        if self._guard_fires(oldest):
            return self._ids[oldest], True
        return self._neighbour(), False

    def _guard_fires(self, oldest: int) -> bool:
        if len(self._overtakes) >= self.max_bypass:
            return True
        if self.max_wait_s is not None:
            entry = self._by_id[self._ids[oldest]]
            return self._clock() - entry.enqueued_at >= self.max_wait_s
        return False

    def _neighbour(self) -> str:
        """The entry sharing the longest prefix with the cursor; ties go forward."""
        arr, ids = self._sorted, self._ids
        if self._cursor is None:
            return ids[arr[0][1]]
        i = bisect.bisect_left(arr, (self._cursor_key, -1))
        after = ids[arr[i][1]] if i < len(arr) else None
        before = ids[arr[i - 1][1]] if i > 0 else None
        if before is None:
            assert after is not None
            return after
        if after is None:
            return before
        la = common_prefix_len(self._cursor, self._by_id[after].key)
        lb = common_prefix_len(self._cursor, self._by_id[before].key)
        return after if la >= lb else before

    def _insert(self, item_id: str, entry: _Entry[T]) -> None:
        bisect.insort(self._sorted, (entry.packed, entry.seq))
        self._by_id[item_id] = entry
        self._ids[entry.seq] = item_id

    def _delete_sorted(self, entry: _Entry[T]) -> None:
        i = bisect.bisect_left(self._sorted, (entry.packed, entry.seq))
        assert self._sorted[i][1] == entry.seq
        del self._sorted[i]

    def _oldest_seq(self) -> int | None:
        while self._arrivals and self._arrivals[0] not in self._ids:
            self._arrivals.popleft()
        return self._arrivals[0] if self._arrivals else None

    def _advance_oldest(self) -> None:
        oldest = self._oldest_seq()
        if oldest is None:
            self._overtakes.clear()
            return
        # Pops older than the new oldest no longer overtake anyone waiting.
        cut = bisect.bisect_right(self._overtakes, oldest)
        if cut:
            del self._overtakes[:cut]
