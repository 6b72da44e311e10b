"""BatchJob: validate, wait for the ServingSLO, dispatch, and finish in a final phase.

One kopf daemon per BatchJob runs `run_job`; kopf restarts it when the operator restarts,
and the dispatcher resumes from the output ConfigMap. Setting ``spec.cancel`` or deleting
the job stops it and cancels what is still queued on the pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hygen_operator import dispatcher_job
from hygen_operator.batch_io import (
    ConfigMapSink,
    InputError,
    MissingInput,
    check_input,
    input_chunks,
    make_sink,
)
from hygen_operator.conditions import field_errors, now, set_condition
from hygen_operator.dispatch import Dispatcher, Progress, forget_on, job_prefix
from hygen_operator.events import post_event
from hygen_operator.kube import JOB, PVC, SECRET, ApiError, Kind, Kube
from hygen_operator.object_store import SECRET_KEYS, StoreConfigError
from hygen_operator.pod_client import PodClient
from hygen_operator.resources import GROUP, VERSION, BatchJobSpec
from hygen_operator.servingslo import Context, ready_pods
from hygen_operator.settings import OperatorSettings
from hygen_pod.contract.api import window_seconds

BATCHJOB = Kind(GROUP, VERSION, "batchjobs", "BatchJob")
SERVINGSLO = Kind(GROUP, VERSION, "servingslos", "ServingSLO")
TERMINAL = ("Succeeded", "Failed", "Cancelled")


async def _status(ctx: Context, ns: str, name: str, patch: dict[str, Any]) -> None:
    await ctx.kube.patch(BATCHJOB, ns, name, {"status": patch}, status=True)


async def run_job(
    ctx: Context,
    body: Any,
    stop_reason: Callable[[], str | None],
    sleep: Callable[[float], Awaitable[Any]],
    volume_root: Path | None = None,
) -> None:
    """Validate, wait for the ServingSLO, dispatch, record the final phase.

    ``body`` is a live view of the BatchJob (``spec.cancel`` is re-read); ``stop_reason``
    says "Stopped" (process exiting: resume later) or "Deleted" (cancel queued work).
    A job with volume or s3 input/output runs in a dispatcher Job that mounts the claims
    and the store's credentials (``volume_root`` is set there); the operator creates it.
    """
    meta = body["metadata"]
    name, ns, uid, gen = meta["name"], meta["namespace"], meta["uid"], meta.get("generation")
    own = ctx.settings.batch_api_volume(ns)
    status = dict(body.get("status") or {})
    if status.get("phase") in TERMINAL:
        return
    conds = list(status.get("conditions") or [])

    async def state(phase: str, reason: str, msg: str, warn: bool = True, **extra: Any) -> None:
        """Record a phase: status (with the Complete condition) and, for problems, an Event."""
        if warn:
            await post_event(ctx.kube, body, "Warning", reason, msg)
        ok = phase == "Succeeded"
        cond = set_condition(conds, "Complete", ok, reason, msg, gen)
        await _status(
            ctx,
            ns,
            name,
            {"phase": phase, "reason": reason, "message": msg, "conditions": cond, **extra},
        )

    try:
        spec = BatchJobSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        await state("Failed", "InvalidSpec", field_errors(e))
        return

    def cancelled() -> str | None:
        return stop_reason() or ("Cancelled" if (body.get("spec") or {}).get("cancel") else None)

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
        await sleep(ctx.settings.dispatch_poll_s * 2)

    started = status.get("startTime") or now()
    deadline = (
        _epoch(started, time.time()) + window_seconds(spec.completion_window)
        if spec.completion_window
        else None
    )

    # Wait for what the job reads: its input ConfigMap, or the claims a dispatcher Job would
    # mount. Applied after the job (kubectl apply -f dir/ goes alphabetically) is not an
    # error: the job stays Pending, naming it, re-checked with backoff.
    async def missing() -> tuple[str, str] | None:
        try:
            await check_input(spec, ctx.kube, ns, volume_root, own)
        except MissingInput as e:
            return "InputNotFound", str(e)
        if spec.object_store is not None and volume_root is None:
            secret = spec.object_store.credentials_secret
            data = ((await ctx.kube.get(SECRET, ns, secret)) or {}).get("data") or {}
            lacking = [k for k in SECRET_KEYS.values() if k not in data]
            if lacking:
                return "SecretNotFound", (
                    f"spec.objectStore.credentialsSecret: Secret {secret!r} in {ns} is missing "
                    f"or has no {' / '.join(lacking)}"
                )
        if spec.uses_volume and volume_root is None:
            for field, ref in (("input", spec.input.volume), ("output", spec.output.volume)):
                if ref is not None and await ctx.kube.get(PVC, ns, ref.claim_name) is None:
                    return "ClaimNotFound", (
                        f"spec.{field}.volume.claimName: PersistentVolumeClaim "
                        f"{ref.claim_name!r} not found in {ns}"
                    )
        return None

    delay = ctx.settings.dispatch_poll_s * 2
    while True:
        try:
            gap = await missing()
        except InputError as e:  # e.g. the store refuses the credentials: name the field
            await state("Failed", "InputError", str(e), completionTime=now())
            return
        if gap is None:
            break
        reason, what = gap
        if stop_reason():
            return
        if cancelled():
            msg = f"cancelled while waiting for what it needs ({what})"
            await state("Cancelled", "Cancelled", msg, warn=False, completionTime=now())
            return
        if deadline is not None and time.time() > deadline:
            msg = f"the completion window passed while waiting: {what}"
            await state("Failed", "Expired", msg, completionTime=now())
            return
        if status.get("message") != what:
            status["message"] = what
            await state("Pending", reason, what, startTime=started)
        await sleep(delay)
        delay = min(delay * 2, 30.0)  # backoff: a job can wait a long time
    if spec.in_dispatcher_job and volume_root is None:
        await ensure_dispatcher_job(ctx, body, spec)
        while not cancelled():  # the Job records progress; deleting the BatchJob deletes it
            await sleep(ctx.settings.dispatch_poll_s * 5)
        return

    def parts() -> dict[str, Any]:
        return {"outputConfigMaps": list(sink.parts)} if isinstance(sink, ConfigMapSink) else {}

    async def report(p: Progress) -> None:
        await _status(
            ctx,
            ns,
            name,
            {
                **parts(),
                "phase": "Running",
                "reason": "Running",
                "total": p.total,
                "completed": p.completed,
                "failed": p.failed,
                "progress": f"{p.done}/{p.total}",
                "startTime": started,
                "message": p.problem,
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

    def read() -> Any:
        return input_chunks(spec, ctx.kube, ns, volume_root, own)

    try:
        sink = make_sink(spec, ctx.kube, ns, uid, volume_root, own)
        d = Dispatcher(
            ctx.pods,
            uid,
            spec,
            read,
            sink,
            pods,
            report,
            poll_s=ctx.settings.dispatch_poll_s,
            started_at=_epoch(started, time.time()),
        )
        outcome, p = await d.run(cancelled)
        if outcome not in ("Stopped", "Deleted"):
            await sink.finish()  # publish the output (the object store's parts -> one object)
    except (InputError, MissingInput) as e:
        await state("Failed", "InputError", str(e), completionTime=now())
        return
    except StoreConfigError as e:  # the output's store refuses us: name the field
        await state("Failed", "OutputError", str(e), completionTime=now())
        return
    if outcome in ("Stopped", "Deleted"):
        return  # operator shutting down (the next run resumes) or the job is gone
    phase, reason = final_phase(outcome, p)
    msg = f"{p.completed} completed, {p.failed} failed of {p.total}" + (
        " (completion window passed)" if outcome == "Expired" else ""
    )
    if reason == "AllRequestsFailed":
        msg = f"every line failed ({p.failed} of {p.total}): see their errors in the output"
    elif reason == "EmptyInput":
        msg = "the input has no lines"
    if phase == "Succeeded" and p.failed:
        conds[:] = set_condition(
            conds, "LinesFailed", True, "SomeRequestsFailed",
            f"{p.failed} of {p.total} lines failed: their errors are in the output", gen,
        )  # fmt: skip
    counts = {"total": p.total, "completed": p.completed, "failed": p.failed}
    await state(
        phase,
        reason,
        msg,
        warn=phase == "Failed",
        progress=f"{p.done}/{p.total}",
        startTime=started,
        completionTime=now(),
        **parts(),
        **counts,
    )
    if phase != "Failed":
        await post_event(ctx.kube, body, "Normal", phase, msg)
    await sink.cleanup()


def final_phase(outcome: str, p: Progress) -> tuple[str, str]:
    """(phase, reason) of a finished dispatch, with OpenAI batch semantics: a job whose
    every line failed has Failed; one with some failed lines has Succeeded (the failures
    are in its output, and a LinesFailed condition says how many)."""
    if outcome == "Cancelled":
        return "Cancelled", "Cancelled"
    if outcome != "Succeeded":
        return "Failed", outcome
    if p.total == 0:
        return "Failed", "EmptyInput"
    if p.completed == 0:
        return "Failed", "AllRequestsFailed"
    return "Succeeded", "Succeeded"


async def forget_job(ctx: Context, body: Any) -> None:
    """A BatchJob is being deleted: forget its requests on every ready pod of its ServingSLO.

    The dispatch loop does this too when it sees the deletion; this handler also covers a
    job deleted while no operator (or dispatcher Job) was running. Best effort: a pod that
    does not answer is logged, and deletion is not held up.
    """
    meta = body["metadata"]
    slo = (body.get("spec") or {}).get("servingSlo")
    if not isinstance(slo, str) or not slo:
        return  # an invalid job never dispatched anything
    pods = await ready_pods(ctx.kube, meta["namespace"], slo)
    await forget_on(ctx.pods, pods, job_prefix(meta["uid"]))


async def ensure_dispatcher_job(ctx: Context, body: Any, spec: BatchJobSpec) -> None:
    """The Job that dispatches a BatchJob whose input or output is on a volume."""
    meta = body["metadata"]
    job = dispatcher_job.dispatcher_job(meta["name"], meta["namespace"], spec, ctx.settings)
    job["metadata"]["ownerReferences"] = [{
        "apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"],
        "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
    }]  # fmt: skip
    _, created = await ctx.kube.ensure(JOB, meta["namespace"], job)
    if created:
        msg = f"Job {job['metadata']['name']} dispatches (volume or s3 input/output)"
        await post_event(ctx.kube, body, "Normal", "DispatcherJob", msg)


def _epoch(ts: str, default: float) -> float:
    import datetime as dt

    try:
        return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return default


async def dispatch_process(settings: OperatorSettings, ns: str, name: str, root: Path) -> int:
    """`hygen-operator dispatch`: run one BatchJob to the end inside its dispatcher Job.

    The BatchJob is re-read every poll (cancel, deletion); SIGTERM stops without cancelling,
    so the restarted Job resumes from the output file.
    """
    kube = await Kube.connect(settings.kubeconfig, agent="hygen-dispatcher")
    pods = PodClient(settings.control_token)
    try:
        body = await kube.get(BATCHJOB, ns, name)
        if body is None:
            print(f"BatchJob {ns}/{name} not found", file=sys.stderr)
            return 1
        uid, live = body["metadata"]["uid"], dict(body)
        stop, reason = asyncio.Event(), {"r": None}

        def halt(r: str) -> None:
            reason["r"] = reason["r"] or r
            stop.set()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, halt, "Stopped")

        async def sleep(t: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), t)

        async def refresh() -> None:
            while not stop.is_set():
                await sleep(settings.dispatch_poll_s)
                try:
                    b = await kube.get(BATCHJOB, ns, name)
                except ApiError:
                    continue
                if b is None or b["metadata"]["uid"] != uid:
                    halt("Deleted")
                else:
                    live.clear()
                    live.update(b)

        watcher = asyncio.create_task(refresh())
        try:
            await run_job(Context(kube, pods, settings), live, lambda: reason["r"], sleep, root)
        finally:
            watcher.cancel()
        return 0
    finally:
        await pods.close()
        await kube.close()
