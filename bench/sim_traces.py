"""The benches' traces and how the colocation bench cuts them: profiling slices, a disjoint
evaluation slice and two disjoint offline backlogs.

One place for it, so `colocation.py` and the scripts that rerun its settings
(`sim_workload.py`) cut a trace file exactly the same way.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from hygen_pod.profiling.slices import Slice, plan_slices, split_backlogs
from hygen_pod.profiling.traces import (
    TraceRequest,
    arxiv_summarization,
    azure_conversation,
    mooncake_conversation,
    read_trace_file,
)

NAMED_TRACES = {
    "azure": azure_conversation,
    "arxiv": arxiv_summarization,
    "mooncake": mooncake_conversation,
}


def read_trace(path: str | None, name: str, data: str | None) -> list[TraceRequest]:
    """A trace from ``path`` if given, else the named shared trace (in ``data``)."""
    if path:
        return read_trace_file(path)
    return NAMED_TRACES[name](data)


@dataclass
class TracePlan:
    """The online trace cut into slices and the offline set split into two backlogs."""

    online: list[TraceRequest]
    prof_slices: list[Slice]
    eval_slice: Slice
    prof_pool: list[TraceRequest]
    eval_pool: list[TraceRequest]

    def describe(self) -> str:
        """One line for stderr: where the slices lie and how large the backlogs are."""
        return (
            f"online trace {len(self.online)} requests: profiling slices "
            + ", ".join(f"[{s.start}, {s.end})" for s in self.prof_slices)
            + f", evaluation [{self.eval_slice.start}, {self.eval_slice.end}); offline "
            f"backlogs of {len(self.prof_pool)} (profiling) and {len(self.eval_pool)} "
            "(evaluation), disjoint"
        )


def plan_traces(
    *,
    online_file: str | None,
    online_name: str,
    offline_file: str | None,
    offline_name: str,
    data: str | None,
    profile_slices: int,
    load: float,
    window_s: float,
    backlog: int,
    seed: int,
) -> TracePlan:
    """Read both traces and cut them for ``profile_slices`` slices at ``load`` req/s (the
    largest load the run will use: the slices must hold its arrivals).

    FileNotFoundError for a missing trace; ValueError for a trace too short for the slices
    or an offline set too small for two disjoint backlogs of ``backlog``.
    """
    online = read_trace(online_file, online_name, data)
    pool = read_trace(offline_file, offline_name, data)
    prof_slices, eval_slice = plan_slices(len(online), profile_slices, load, window_s)
    prof_pool, eval_pool = split_backlogs(pool, backlog, seed)
    return TracePlan(online, prof_slices, eval_slice, prof_pool, eval_pool)


def plan_for(args: argparse.Namespace, load: float) -> TracePlan:
    """`plan_traces` from the benches' own options (`colocation.py`, and
    `sim_workload.add_workload_args`, which names them the same)."""
    return plan_traces(
        online_file=args.online_trace_file, online_name=args.online_trace,
        offline_file=args.offline_trace_file, offline_name=args.offline_set,
        data=args.data, profile_slices=args.profile_slices, load=load,
        window_s=args.window, backlog=args.offline, seed=args.seed,
    )  # fmt: skip
