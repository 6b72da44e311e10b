"""``hygen-operator``: the control plane's command line."""

from __future__ import annotations

import argparse
import sys


def _cmd_crds(args: argparse.Namespace) -> int:
    from hygen_operator.crd import write

    for p in write(args.out):
        print(p)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import logging

    from pydantic import ValidationError

    from hygen_operator.operator_main import run
    from hygen_operator.settings import OperatorSettings, read_token

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per pod call otherwise
    try:
        settings = OperatorSettings(
            namespaces=args.namespace,
            pod_image=args.pod_image,
            token_secret=args.token_secret,
            control_token=read_token(args.control_token_file),
            status_interval_s=args.status_interval,
            retune_interval_s=args.retune_interval,
            dispatch_poll_s=args.dispatch_poll,
            data_dir=args.data_dir,
            kubeconfig=args.kubeconfig,
            operator_image=args.operator_image,
            dispatcher_service_account=args.dispatcher_service_account,
            peering=args.peering,
        )
    except (ValueError, ValidationError, OSError) as e:
        print(f"hygen-operator: {e}", file=sys.stderr)
        return 2
    run(settings, liveness=args.liveness)
    return 0


def _cmd_dispatch(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from pydantic import ValidationError

    from hygen_operator.batchjob import dispatch_process
    from hygen_operator.settings import OperatorSettings, read_token

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = OperatorSettings(
            control_token=read_token(args.control_token_file),
            dispatch_poll_s=args.dispatch_poll,
            kubeconfig=args.kubeconfig,
        )
    except (ValueError, ValidationError, OSError) as e:
        print(f"hygen-operator dispatch: {e}", file=sys.stderr)
        return 2
    return asyncio.run(
        dispatch_process(settings, args.namespace, args.batchjob, Path(args.volume_root))
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hygen-operator",
        description="HyGen operator: ServingSLO and BatchJob custom resources for vLLM pods.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the models")
    c.add_argument("--out", default="crds", help="folder to write servingslos.yaml/batchjobs.yaml")
    c.set_defaults(func=_cmd_crds)

    r = sub.add_parser(
        "run",
        help="run the operator (kopf) against the cluster in $KUBECONFIG or in-cluster config",
        description="Reconcile ServingSLOs (Deployment, Service, profile ConfigMap; budget push "
        "and retuning) and dispatch BatchJobs to the pods. Every option also reads HYGEN_<NAME>.",
    )
    env = _env
    r.add_argument(
        "--namespace",
        action="append",
        default=env("NAMESPACES", "").split(",") if env("NAMESPACES") else [],
        help="watch this namespace (repeat, or HYGEN_NAMESPACES=a,b); default: all",
    )
    r.add_argument(
        "--pod-image",
        default=env("POD_IMAGE", "ghcr.io/hygen/hygen-pod:latest"),
        help="image for ServingSLO pods that name none",
    )
    r.add_argument(
        "--token-secret",
        default=env("TOKEN_SECRET", "hygen-control-token"),
        help="Secret (key 'token') the pods read their control token from",
    )
    r.add_argument(
        "--control-token-file",
        default=env("CONTROL_TOKEN_FILE"),
        help="the same token for the operator (else $HYGEN_CONTROL_TOKEN)",
    )
    r.add_argument(
        "--status-interval",
        type=float,
        default=float(env("STATUS_INTERVAL", "10")),
        help="seconds between pod metric reads, status writes and budget pushes",
    )
    r.add_argument(
        "--retune-interval",
        type=float,
        default=float(env("RETUNE_INTERVAL", "30")),
        help="minimum seconds between budget changes of one ServingSLO",
    )
    r.add_argument(
        "--dispatch-poll",
        type=float,
        default=float(env("DISPATCH_POLL", "1")),
        help="seconds between BatchJob result polls",
    )
    r.add_argument(
        "--data-dir",
        default=env("DATA_DIR", "/opt/hygen/data"),
        help="trace folder inside the pod image, for profiling",
    )
    r.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG"),
        help="kubeconfig file (default: in-cluster, then $KUBECONFIG)",
    )
    r.add_argument(
        "--liveness",
        default=env("LIVENESS"),
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    r.add_argument(
        "--log-level",
        default=env("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    r.add_argument(
        "--operator-image",
        default=env("OPERATOR_IMAGE", "ghcr.io/hygen/hygen-operator:latest"),
        help="image of the dispatcher Jobs for BatchJobs with volume input/output",
    )
    r.add_argument(
        "--dispatcher-service-account",
        default=env("DISPATCHER_SERVICE_ACCOUNT", "hygen-dispatcher"),
        help="ServiceAccount of dispatcher Jobs (get/list pods, servingslos; get/patch batchjobs)",
    )
    r.add_argument(
        "--peering",
        default=env("PEERING"),
        help="kopf peering name (KopfPeering/ClusterKopfPeering objects) when running "
        "more than one replica: one is active, the others stand by",
    )
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser(
        "dispatch",
        help="run one BatchJob with volume input/output (the command of its dispatcher Job)",
        description="Dispatch a BatchJob's lines to its ServingSLO's pods and write the results; "
        "resumes from the output file after a crash. The operator creates the Job that runs this.",
    )
    d.add_argument("--namespace", required=True)
    d.add_argument("--batchjob", required=True)
    d.add_argument("--volume-root", default="/data", help="claims are mounted at ROOT/<claimName>")
    d.add_argument("--dispatch-poll", type=float, default=float(env("DISPATCH_POLL", "1")))
    d.add_argument(
        "--control-token-file",
        default=env("CONTROL_TOKEN_FILE"),
        help="pods' control token (else $HYGEN_CONTROL_TOKEN)",
    )
    d.add_argument(
        "--kubeconfig",
        default=env("KUBECONFIG"),
        help="kubeconfig file (default: in-cluster, then $KUBECONFIG)",
    )
    d.set_defaults(func=_cmd_dispatch)
    return p


def _env(name: str, default: str | None = None) -> str | None:
    import os

    return os.environ.get(f"HYGEN_{name}", default)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
