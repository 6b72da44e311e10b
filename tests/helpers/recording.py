"""Schedulers that record what they schedule each step (for stock-vs-plugin comparisons)."""

from __future__ import annotations

from vllm.v1.core.sched.scheduler import Scheduler

from hygen_pod.vllm_adapter.scheduler import HyGenScheduler


class RecordingMixin:
    steps: list[dict[str, int]]

    def schedule(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = super().schedule(*args, **kwargs)  # type: ignore[misc]
        if not hasattr(self, "steps"):
            self.steps = []
        if out.total_num_scheduled_tokens:
            # vLLM suffixes each external request id with "-<random>": drop it.
            self.steps.append(
                {k.rsplit("-", 1)[0]: v for k, v in sorted(out.num_scheduled_tokens.items())}
            )
        return out


class RecordingStockScheduler(RecordingMixin, Scheduler):
    """Stock vLLM scheduling, recorded."""


class RecordingHyGenScheduler(RecordingMixin, HyGenScheduler):
    """The HyGen plugin, recorded."""
