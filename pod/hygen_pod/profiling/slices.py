"""Disjoint trace slices and offline backlogs for profiling and evaluation.

A setting found on one stretch of a trace must be judged on another it never saw, with
an offline backlog it never saw either. The slices are computed from the trace's own
length, so a benchmark runs on any trace file, and it fails with a clear message when the
trace is too short for the requested slices.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Slice:
    """Trace requests ``[start, start + count)``."""

    start: int
    count: int

    @property
    def end(self) -> int:
        return self.start + self.count


def requests_per_slice(qps: float, window_s: float) -> int:
    """Trace requests one slice may read (`simulator.online_requests` reads this many)."""
    return int(qps * window_s * 1.5) + 10


def check_disjoint(slices: Sequence[Slice]) -> None:
    """ValueError when any two slices share a request."""
    ordered = sorted(slices, key=lambda s: s.start)
    for a, b in itertools.pairwise(ordered):
        if b.start < a.end:
            raise ValueError(f"trace slices overlap: [{a.start}, {a.end}) and [{b.start}, {b.end})")


def plan_slices(
    trace_len: int, profile_slices: int, max_qps: float, window_s: float
) -> tuple[list[Slice], Slice]:
    """``profile_slices`` profiling slices spread over the trace's first three quarters and
    one evaluation slice at the start of its last quarter (the latest stretch, as a
    deployment would meet it), all disjoint. The evaluation slice does not depend on
    ``profile_slices``, so runs with more or fewer profiling slices are judged alike."""
    if profile_slices < 1:
        raise ValueError(f"need at least one profiling slice, got {profile_slices}")
    n = requests_per_slice(max_qps, window_s)
    # a quarter holds the evaluation slice; three quarters hold the profiling slices
    need = 4 * max(n, -(-profile_slices * n // 3))
    if trace_len < need:
        raise ValueError(
            f"trace too short: {profile_slices} profiling slices and an evaluation slice of "
            f"{n} requests each ({max_qps:g} req/s x {window_s:g} s, with margin) need "
            f"{need} requests; it has {trace_len}. Use fewer slices, a shorter "
            "window or a longer trace"
        )
    eval_start = 3 * (trace_len // 4)
    stride = eval_start // profile_slices
    cuts = [Slice(k * stride, n) for k in range(profile_slices)] + [Slice(eval_start, n)]
    check_disjoint(cuts)
    return cuts[:-1], cuts[-1]


def as_slices(workload: Sequence[T] | Sequence[Sequence[T]], item: type, who: str) -> list[list[T]]:
    """One slice of ``item`` requests, or a list of slices, as a list of slices; ValueError
    naming ``who`` when there is none or one is empty."""
    parts = list(workload)
    if parts and isinstance(parts[0], item):
        parts = [parts]
    if not parts or not all(parts):
        raise ValueError(f"{who} needs at least one non-empty slice of requests")
    return [list(p) for p in parts]  # type: ignore[arg-type]


def split_backlogs(pool: Sequence[T], count: int, seed: int) -> tuple[list[T], list[T]]:
    """Two disjoint samples of ``count`` requests each: profiling, then evaluation."""
    if count < 1:
        raise ValueError(f"backlog size must be >= 1, got {count}")
    if len(pool) < 2 * count:
        raise ValueError(
            f"offline set too small: two disjoint backlogs of {count} need {2 * count} "
            f"requests; it has {len(pool)}"
        )
    picked = random.Random(seed).sample(range(len(pool)), 2 * count)
    return [pool[i] for i in picked[:count]], [pool[i] for i in picked[count:]]
