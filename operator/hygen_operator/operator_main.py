"""Wire the handlers into a kopf registry and run the operator until it is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import kopf
import uvicorn

from hygen_operator import batchjob, servingslo
from hygen_operator.kube import Kube
from hygen_operator.pod_client import PodClient
from hygen_operator.resources import GROUP, VERSION
from hygen_operator.settings import OperatorSettings

logger = logging.getLogger("hygen_operator")


class _QuietServer(uvicorn.Server):
    """uvicorn inside kopf's loop: kopf owns the process's signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_registry(
    ctx_ref: dict[str, servingslo.Context], settings: OperatorSettings
) -> kopf.OperatorRegistry:
    """Handlers for both kinds; ``ctx_ref['ctx']`` is filled at startup."""
    reg = kopf.OperatorRegistry()
    gateway: dict[str, Any] = {}  # the Batch API server and its task, when one is served
    slo = (GROUP, VERSION, "servingslos")
    bj = (GROUP, VERSION, "batchjobs")

    @kopf.on.startup(registry=reg)
    async def startup(**kw: Any) -> None:
        settings_: kopf.OperatorSettings = kw["settings"]
        settings_.persistence.finalizer = "hygen.io/operator"
        settings_.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="hygen.io")
        settings_.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="hygen.io", key="last-handled-configuration"
        )
        settings_.posting.level = logging.INFO
        settings_.watching.server_timeout = 60
        settings_.networking.request_timeout = 30
        # A ServingSLO deleted while its sync timer is mid-run waits for the timer to
        # finish; kopf re-checks every cancellation_polling seconds (default 60), which
        # held the finalizer (and the owned Deployment) for a minute after the run ended.
        settings_.background.cancellation_polling = 1.0
        kube = await Kube.connect(settings.kubeconfig)
        ctx_ref["ctx"] = servingslo.Context(kube, PodClient(settings.control_token), settings)
        if settings.batch_api_port is not None:
            gateway["task"] = asyncio.get_running_loop().create_task(serve_gateway(kube))

    async def serve_gateway(kube: Kube) -> None:
        from hygen_operator.batch_gateway import gateway_app

        app = gateway_app(kube, settings.control_token, settings.batch_api_volume)
        config = uvicorn.Config(
            app, host="0.0.0.0", port=settings.batch_api_port or 0, log_level="warning",
            lifespan="off",
        )  # fmt: skip
        server = gateway["server"] = _QuietServer(config)
        logger.info("cluster Batch API on port %s", settings.batch_api_port)
        await server.serve()

    @kopf.on.cleanup(registry=reg)
    async def cleanup(**_: Any) -> None:
        server, task = gateway.get("server"), gateway.get("task")
        if server is not None:
            server.should_exit = True
        if task is not None:
            await asyncio.wait([task], timeout=5)
        ctx = ctx_ref.get("ctx")
        if ctx is not None:
            await ctx.pods.close()
            await ctx.kube.close()

    @kopf.on.login(registry=reg)
    def login(**kw: Any) -> Any:
        if settings.kubeconfig:
            import os

            os.environ["KUBECONFIG"] = settings.kubeconfig
            return kopf.login_with_kubeconfig(**kw)
        return kopf.login_with_service_account(**kw) or kopf.login_with_kubeconfig(**kw)

    @kopf.on.resume(*slo, backoff=2.0, registry=reg)
    @kopf.on.create(*slo, backoff=2.0, registry=reg)
    @kopf.on.update(*slo, field="spec", backoff=2.0, registry=reg)
    async def reconcile_slo(body: Any, patch: Any, logger: Any, **_: Any) -> None:
        patch.status.update(await servingslo.reconcile(ctx_ref["ctx"], body, logger))

    @kopf.timer(
        *slo, interval=settings.status_interval_s, initial_delay=1.0, backoff=2.0, registry=reg
    )
    async def sync_slo(body: Any, patch: Any, logger: Any, **_: Any) -> None:
        st = await servingslo.sync(ctx_ref["ctx"], body, logger)
        if st:
            patch.status.update(st)

    @kopf.daemon(
        *bj, cancellation_backoff=5.0, cancellation_timeout=10.0, backoff=2.0, registry=reg
    )
    async def dispatch_job(body: Any, stopped: Any, logger: Any, **_: Any) -> None:
        def stop_reason() -> str | None:
            if not stopped:
                return None
            deleted = (
                stopped.reason and kopf.DaemonStoppingReason.RESOURCE_DELETED in stopped.reason
            )
            return "Deleted" if deleted else "Stopped"

        await batchjob.run_job(ctx_ref["ctx"], body, stop_reason, stopped.wait)

    @kopf.on.delete(*bj, registry=reg)
    async def forget_job(body: Any, **_: Any) -> None:
        await batchjob.forget_job(ctx_ref["ctx"], body)

    return reg


def run(settings: OperatorSettings, liveness: str | None = None) -> None:
    ctx_ref: dict[str, servingslo.Context] = {}
    reg = build_registry(ctx_ref, settings)
    asyncio.run(
        kopf.operator(
            registry=reg,
            namespaces=settings.namespaces or None,
            clusterwide=not settings.namespaces,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            priority=random.randint(1, 1_000_000),  # peers differ; the highest one is active
            liveness_endpoint=liveness,
        )
    )
