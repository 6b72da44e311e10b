"""Offline queue: prefix-adjacent order and the starvation bound (property tests)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hygen_pod.policy.offline_queue import OfflineQueue, common_prefix_len

# Prompts drawn from a few shared prefixes so that sharing actually happens.
prefixes = st.lists(st.integers(0, 5), min_size=0, max_size=6)
prompts = st.tuples(st.integers(0, 3), prefixes).map(lambda t: (t[0], *t[1]))
# An operation is either "add a prompt" or "pop one".
ops = st.lists(st.one_of(prompts, st.just("pop")), min_size=1, max_size=120)


def _run(ops_list, max_bypass):
    q: OfflineQueue[str] = OfflineQueue(max_bypass=max_bypass)
    arrivals: dict[str, int] = {}
    popped: list[str] = []
    n = 0
    for op in ops_list:
        if op == "pop":
            item = q.pop()
            if item is not None:
                popped.append(item)
        else:
            rid = f"r{n}"
            arrivals[rid] = n
            q.add(rid, op, rid)
            n += 1
    while (item := q.pop()) is not None:
        popped.append(item)
    return q, arrivals, popped


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(0, 8))
def test_every_request_is_popped_once_and_within_the_bypass_bound(ops_list, k) -> None:
    q, arrivals, popped = _run(ops_list, k)
    assert sorted(popped) == sorted(arrivals)  # nothing lost, nothing twice
    assert len(q) == 0
    for i, rid in enumerate(popped):
        # Requests that arrived after rid but were popped before it.
        overtook = [o for o in popped[:i] if arrivals[o] > arrivals[rid]]
        assert len(overtook) <= k, (rid, overtook)


@settings(max_examples=300, deadline=None)
@given(st.lists(prompts, min_size=1, max_size=60, unique=True))
def test_prefix_sharing_requests_are_adjacent_without_guard(batch) -> None:
    # Bound large enough that the guard never fires: pure depth-first order.
    q: OfflineQueue[tuple[int, ...]] = OfflineQueue(max_bypass=10**6)
    for i, p in enumerate(batch):
        q.add(str(i), p, p)
    order = q.pop_many(len(batch))
    assert q.guard_pops == 0
    assert sorted(order) == sorted(batch)
    # For every prefix length L, requests sharing their first L tokens form one
    # contiguous run in the order (the DFS property of a prefix trie).
    for length in range(1, 8):
        groups: dict[tuple[int, ...], list[int]] = {}
        for pos, p in enumerate(order):
            if len(p) >= length:
                groups.setdefault(p[:length], []).append(pos)
        for positions in groups.values():
            between = order[positions[0] : positions[-1] + 1]
            shorter = [p for p in between if len(p) < length]
            # Only prompts that end inside the shared prefix (trie ancestors) may sit between.
            assert all(common_prefix_len(p, order[positions[0]]) == len(p) for p in shorter), (
                length,
                order,
            )
            assert len(between) - len(shorter) == len(positions)


def test_guard_fires_and_order_continues_from_cursor() -> None:
    q: OfflineQueue[str] = OfflineQueue(max_bypass=2)
    q.add("old", (9, 9, 9), "old")
    for i in range(5):
        q.add(f"a{i}", (1, 2, i), f"a{i}")
    first = q.pop_many(3)
    # The first pop starts the DFS at the smallest key; two overtakes, then the guard.
    assert first == ["a0", "a1", "old"]
    assert q.guard_pops == 1
    # After the guard the order continues with the nearest prefix to the cursor.
    # (a4 shares nothing with "old"; it is simply the nearest key in trie order.)
    assert q.pop_many(3) == ["a4", "a3", "a2"]


def test_push_front_resumes_first_and_remove_drops() -> None:
    q: OfflineQueue[str] = OfflineQueue(max_bypass=100)
    q.add("a", (1,), "a")
    q.add("b", (2,), "b")
    q.push_front("p", "p")
    assert "p" in q and len(q) == 3
    assert q.pop() == "p"
    assert q.remove("b") == "b"
    assert q.remove("zzz") is None
    assert q.pop() == "a"
    assert q.pop() is None


def test_wait_time_guard_uses_clock() -> None:
    now = [0.0]
    q: OfflineQueue[str] = OfflineQueue(max_bypass=100, max_wait_s=5.0, clock=lambda: now[0])
    q.add("z", (9,), "z")
    now[0] = 1.0
    q.add("a", (1,), "a")
    q.add("b", (1, 1), "b")
    assert q.pop() == "a"  # DFS starts at the smallest key
    now[0] = 10.0
    assert q.pop() == "z"  # waited past max_wait_s


# Operations on a queue whose head is peeked between them: add, pop, push back, remove,
# let time pass (the wall-clock guard).
mixed_ops = st.lists(
    st.one_of(
        prompts,
        st.sampled_from(["pop", "push_front", "remove", "peek"]),
        st.floats(0.0, 4.0),
    ),
    min_size=1,
    max_size=100,
)


@settings(max_examples=300, deadline=None)
@given(mixed_ops, st.integers(0, 4), st.sampled_from([None, 3.0]))
def test_a_peek_is_always_what_the_queue_would_choose_now(ops_list, k, max_wait) -> None:
    """The queue keeps its last choice between changes (the scheduler peeks every step);
    each peek must equal a fresh choice, whatever happened since, time included."""
    now = [0.0]
    q: OfflineQueue[str] = OfflineQueue(max_bypass=k, max_wait_s=max_wait, clock=lambda: now[0])
    popped: list[str] = []
    n = 0
    for op in ops_list:
        if isinstance(op, float):
            now[0] += op
        elif op == "pop":
            if (item := q.pop()) is not None:
                popped.append(item)
        elif op == "push_front":
            if popped:
                q.push_front(popped[-1], popped.pop())
        elif op == "remove":
            ids = q.ids()
            if ids:
                q.remove(ids[len(ids) // 2])
        elif op != "peek":
            q.add(f"r{n}", op, f"r{n}")
            n += 1
        fresh, _ = q._choose_now()  # the uncached choice
        assert q.peek() == fresh


# Token ids whose bytes order differs from their numeric order under a wrong packing
# (little-endian, words narrower than 32 bits, or the sign bit left as it is).
WIDE_IDS = (-(2**31), -65_537, -256, -1, 0, 1, 255, 256, 65_535, 65_536, 2**24 + 1, 2**31 - 1)
wide_prompts = st.lists(st.integers(0, len(WIDE_IDS) - 1), min_size=0, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(wide_prompts, min_size=1, max_size=40), st.integers(0, 4))
def test_order_depends_only_on_token_order_not_on_id_width(ranks, k) -> None:
    """The queue sorts packed bytes; relabelling token ids monotonically (rank -> a wide
    id) must not change the pop order, so the packing keeps numeric order."""

    def order(label) -> list[str]:
        q: OfflineQueue[str] = OfflineQueue(max_bypass=k)
        for i, p in enumerate(ranks):
            q.add(f"r{i}", [label(t) for t in p], f"r{i}")
        return q.pop_many(len(ranks))

    assert order(lambda t: WIDE_IDS[t]) == order(lambda t: t)


def test_token_ids_outside_signed_32_bits_are_refused_clearly() -> None:
    q: OfflineQueue[str] = OfflineQueue()
    for bad in (-(2**31) - 1, 2**31):
        try:
            q.add("x", (1, bad), "x")
        except ValueError as e:
            assert "token ids" in str(e)
        else:
            raise AssertionError(f"{bad} accepted")
    assert len(q) == 0
