"""BatchJob: validate, wait for the ServingSLO, dispatch, and finish in a final phase.

One kopf daemon per BatchJob runs `run_job`; kopf restarts it when the operator restarts,
and the dispatcher resumes from the output ConfigMap. Setting ``spec.cancel`` or deleting
the job stops it and cancels what is still queued on the pods.
"""

from __future__ import annotations

import time
from typing import Any

import kopf
from pydantic import ValidationError

from hygen_operator.conditions import field_errors, now, set_condition
from hygen_operator.dispatch import Dispatcher, InputError, Progress
from hygen_operator.kube import Kind
from hygen_operator.resources import GROUP, VERSION, BatchJobSpec
from hygen_operator.servingslo import Context, ready_pods

BATCHJOB = Kind(GROUP, VERSION, "batchjobs", "BatchJob")
SERVINGSLO = Kind(GROUP, VERSION, "servingslos", "ServingSLO")
TERMINAL = ("Succeeded", "Failed", "Cancelled")


async def _status(ctx: Context, ns: str, name: str, patch: dict[str, Any]) -> None:
    await ctx.kube.patch(BATCHJOB, ns, name, {"status": patch}, status=True)


async def run_job(ctx: Context, body: Any, stopped: Any, logger: Any) -> None:
    """The daemon body: returns when the job reaches a final phase or is stopped."""
    meta = body["metadata"]
    name, ns, uid, gen = meta["name"], meta["namespace"], meta["uid"], meta.get("generation")
    status = dict(body.get("status") or {})
    if status.get("phase") in TERMINAL:
        return
    conds = list(status.get("conditions") or [])

    async def state(phase: str, reason: str, msg: str, warn: bool = True, **extra: Any) -> None:
        """Record a phase: status (with the Complete condition) and, for problems, an Event."""
        if warn:
            kopf.warn(body, reason=reason, message=msg)
        ok = phase == "Succeeded"
        cond = set_condition(conds, "Complete", ok, reason, msg, gen)
        await _status(ctx, ns, name, {"phase": phase, "message": msg, "conditions": cond, **extra})

    try:
        spec = BatchJobSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        await state("Failed", "InvalidSpec", field_errors(e))
        return

    def cancelled() -> str | None:
        if stopped:
            deleted = (
                stopped.reason and kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason
            )
            return "Deleted" if deleted else "Stopped"
        return "Cancelled" if (body.get("spec") or {}).get("cancel") else None

    # wait for the ServingSLO (a missing reference is reported, not fatal: it may come later)
    while True:
        if cancelled():
            break
        slo = await ctx.kube.get(SERVINGSLO, ns, spec.serving_slo)
        if slo is not None:
            break
        msg = f"spec.servingSlo: ServingSLO {spec.serving_slo!r} not found in namespace {ns}"
        if status.get("message") != msg:
            status["message"] = msg
            await state("Pending", "ServingSLONotFound", msg)
        await stopped.wait(ctx.settings.dispatch_poll_s * 2)

    started = status.get("startTime") or now()

    async def report(p: Progress) -> None:
        await _status(
            ctx,
            ns,
            name,
            {
                "phase": "Running",
                "total": p.total,
                "completed": p.completed,
                "failed": p.failed,
                "progress": f"{p.done}/{p.total}",
                "startTime": started,
                "message": None,
                "conditions": set_condition(
                    conds,
                    "Complete",
                    False,
                    "Running",
                    f"{p.done}/{p.total} lines have a result",
                    gen,
                ),
            },
        )

    async def pods() -> list:
        return await ready_pods(ctx.kube, ns, spec.serving_slo)

    t0 = time.time()
    d = Dispatcher(
        ctx.kube,
        ctx.pods,
        ns,
        uid,
        spec,
        pods,
        report,
        poll_s=ctx.settings.dispatch_poll_s,
        started_at=_epoch(started, t0),
    )
    try:
        outcome, p = await d.run(cancelled)
    except InputError as e:
        await state("Failed", "InputError", str(e), completionTime=now())
        return
    if outcome in ("Stopped", "Deleted"):
        return  # operator shutting down (the next run resumes) or the job is gone
    phase = {"Succeeded": "Succeeded", "Cancelled": "Cancelled"}.get(outcome, "Failed")
    msg = f"{p.completed} completed, {p.failed} failed of {p.total}" + (
        " (completion window passed)" if outcome == "Expired" else ""
    )
    counts = {"total": p.total, "completed": p.completed, "failed": p.failed}
    await state(
        phase,
        outcome,
        msg,
        warn=False,
        progress=f"{p.done}/{p.total}",
        startTime=started,
        completionTime=now(),
        **counts,
    )
    kopf.info(body, reason=phase, message=msg)


def _epoch(ts: str, default: float) -> float:
    import datetime as dt

    try:
        return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return default
