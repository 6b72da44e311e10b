"""Before the operator starts: is there a cluster, and does it answer? One line if not.

kopf itself would log a traceback and retry forever on a missing or unreachable cluster;
a user who mistyped ``--kubeconfig`` should get the reason at once instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from kubernetes.aio.config.config_exception import ConfigException

from hygen_operator.kube import ApiError, Kube


async def cluster_problem(kubeconfig: str | None, timeout_s: float = 10.0) -> str | None:
    """None when the API server answers ``GET /version``; else what is wrong, in a line."""
    if kubeconfig and not Path(kubeconfig).is_file():
        return f"--kubeconfig {kubeconfig}: no such file"
    # the client logs "Config not found" itself before raising: our line says it better
    logging.getLogger("kubernetes.aio.config.kube_config").setLevel(logging.ERROR)
    try:
        kube = await Kube.connect(kubeconfig)
    except (ConfigException, OSError, ValueError, KeyError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            f"no usable cluster configuration (not in a pod; kubeconfig {where}: {first}): "
            "pass --kubeconfig FILE or set KUBECONFIG"
        )
    kube.retries = 0
    host = kube.api.configuration.host
    try:
        await asyncio.wait_for(kube.request("GET", "/version"), timeout_s)
    except (ApiError, TimeoutError, OSError) as e:
        reason = f"no answer in {timeout_s:.0f} s" if isinstance(e, TimeoutError) else str(e)
        if isinstance(e, ApiError) and e.status in (401, 403):
            return f"the API server at {host} refused our credentials: {reason}"
        if not isinstance(e, ApiError) or e.status == 0:
            return f"the API server at {host} is unreachable: {reason}"
    finally:
        await kube.close()
    return None
