"""Disjoint trace slices and offline backlogs; trace files in any supported format."""

from __future__ import annotations

import json

import pytest

from hygen_pod.profiling.slices import (
    Slice,
    check_disjoint,
    plan_slices,
    requests_per_slice,
    split_backlogs,
)
from hygen_pod.profiling.traces import read_trace_file


def test_slices_come_from_the_trace_length_and_never_overlap() -> None:
    prof, ev = plan_slices(19_366, 3, max_qps=6.0, window_s=180.0)
    n = requests_per_slice(6.0, 180.0)
    assert len(prof) == 3 and all(s.count == n for s in [*prof, ev])
    check_disjoint([*prof, ev])
    assert ev.start > max(s.start for s in prof) and ev.end <= 19_366  # the latest stretch
    # a longer trace spreads the same slices further apart
    assert plan_slices(40_000, 3, 6.0, 180.0)[1].start > ev.start
    # more profiling slices: the same evaluation slice, the profiling ones closer together
    prof6, ev6 = plan_slices(19_366, 6, max_qps=6.0, window_s=180.0)
    assert ev6 == ev == Slice(14_523, n) and len(prof6) == 6
    check_disjoint([*prof6, ev6])
    assert prof6[0].start == 0 and prof6[1].start == 14_523 // 6


def test_a_short_trace_is_refused_with_the_numbers() -> None:
    with pytest.raises(ValueError, match=r"trace too short: .* need 6520 requests; it has 5000"):
        plan_slices(5000, 3, max_qps=6.0, window_s=180.0)
    with pytest.raises(ValueError, match="at least one"):
        plan_slices(5000, 0, 1.0, 10.0)
    # six slices of 1630 need three quarters of at least 9780
    with pytest.raises(ValueError, match=r"need 13040 requests; it has 13000"):
        plan_slices(13_000, 6, max_qps=6.0, window_s=180.0)
    assert len(plan_slices(13_040, 6, max_qps=6.0, window_s=180.0)[0]) == 6


def test_overlapping_slices_are_rejected() -> None:
    check_disjoint([Slice(0, 10), Slice(10, 5)])  # touching is fine
    with pytest.raises(ValueError, match=r"overlap: \[0, 10\) and \[9, 14\)"):
        check_disjoint([Slice(9, 5), Slice(0, 10)])


def test_backlogs_are_disjoint_samples_and_seeded() -> None:
    pool = list(range(100))
    a, b = split_backlogs(pool, 30, seed=1)
    assert len(a) == len(b) == 30 and not set(a) & set(b)
    assert (a, b) == split_backlogs(pool, 30, seed=1) and a != split_backlogs(pool, 30, 2)[0]
    with pytest.raises(ValueError, match="two disjoint backlogs of 60 need 120"):
        split_backlogs(pool, 60, seed=1)


def test_trace_files_in_each_format(tmp_path) -> None:
    azure = tmp_path / "a.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
    )
    got = read_trace_file(azure)
    assert [(r.prompt_tokens, r.output_tokens) for r in got] == [(374, 44), (396, 109)]
    assert got[1].arrival_s == pytest.approx(4.3145790)
    lengths = tmp_path / "l.csv"
    lengths.write_text("num_prefill_tokens,num_decode_tokens\n1000,200\n")
    assert read_trace_file(lengths)[0].prompt_tokens == 1000
    moon = tmp_path / "m.jsonl"
    moon.write_text(
        json.dumps({"timestamp": 1500, "input_length": 9, "output_length": 2, "hash_ids": [4]})
        + "\n"
    )
    r = read_trace_file(moon)[0]
    assert (r.arrival_s, r.prefix_blocks) == (1.5, (4,))
    other = tmp_path / "x.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="unknown trace format"):
        read_trace_file(other)
    bad = tmp_path / "bad.csv"
    bad.write_text("num_prefill_tokens,num_decode_tokens\nlots,2\n")
    with pytest.raises(ValueError, match="malformed trace row"):
        read_trace_file(bad)
    with pytest.raises(FileNotFoundError):
        read_trace_file(tmp_path / "none.csv")
