"""Kubernetes Events about our objects, posted with the operator's own client (so the
dispatcher Job, which runs outside kopf, records them the same way)."""

from __future__ import annotations

import logging
from typing import Any

from hygen_operator.conditions import now
from hygen_operator.kube import EVENT, ApiError, Kube

logger = logging.getLogger(__name__)


async def post_event(kube: Kube, body: Any, type_: str, reason: str, message: str) -> None:
    """Best effort: a failed Event is logged, never fatal."""
    meta = body["metadata"]
    ts = now()
    event = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"],
                           "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta["uid"]},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        "source": {"component": "hygen-operator"}, "reportingComponent": "hygen-operator",
    }  # fmt: skip
    try:
        await kube.request(
            "POST", EVENT.path(meta["namespace"]), {"apiVersion": "v1", "kind": "Event", **event}
        )
    except ApiError as e:
        logger.warning("event %s/%s not posted: %s", reason, meta["name"], e)
