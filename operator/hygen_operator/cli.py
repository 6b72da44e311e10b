"""``hygen-operator``: the control plane's command line."""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_crds(args: argparse.Namespace) -> int:
    from hygen_operator.crd import write

    for p in write(args.out):
        print(p)
    return 0


def _setup_logging(level: str) -> None:
    import logging

    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per pod call otherwise


def _settings(args: argparse.Namespace, **fields: object):
    """OperatorSettings from the parsed options; None (after a message) when they are bad."""
    from pydantic import ValidationError

    from hygen_operator.settings import OperatorSettings, read_token

    try:
        return OperatorSettings(
            control_token=read_token(args.control_token_file),
            dispatch_poll_s=args.dispatch_poll,
            kubeconfig=args.kubeconfig,
            **fields,
        )
    except (ValueError, ValidationError, OSError) as e:
        print(f"hygen-operator {args.command}: {e}", file=sys.stderr)
        return None


def _cmd_run(args: argparse.Namespace) -> int:
    from hygen_operator.operator_main import run

    _setup_logging(args.log_level)
    settings = _settings(
        args,
        namespaces=args.namespace
        or [n for n in os.environ.get("HYGEN_NAMESPACES", "").split(",") if n],
        pod_image=args.pod_image,
        token_secret=args.token_secret,
        status_interval_s=args.status_interval,
        retune_interval_s=args.retune_interval,
        data_dir=args.data_dir,
        operator_image=args.operator_image,
        dispatcher_service_account=args.dispatcher_service_account,
        peering=args.peering,
        batch_api_port=args.batch_api_port,
        batch_api_url=args.batch_api_url,
        batch_api_dir=args.batch_api_dir,
    )
    if settings is None:
        return 2
    import asyncio

    from hygen_operator.preflight import cluster_problem

    problem = asyncio.run(cluster_problem(settings.kubeconfig))
    if problem is not None:
        print(f"hygen-operator run: {problem}", file=sys.stderr)
        return 2
    run(settings, liveness=args.liveness)
    return 0


def _cmd_dispatch(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from hygen_operator.batchjob import dispatch_process

    _setup_logging("info")
    settings = _settings(args)
    if settings is None:
        return 2
    root = Path(args.volume_root)
    return asyncio.run(dispatch_process(settings, args.namespace, args.batchjob, root))


def _option(
    p: argparse.ArgumentParser, flag: str, help: str, default: str | None = None, **kw: object
) -> None:
    """An option whose default comes from HYGEN_<FLAG> (e.g. --retune-interval ->
    HYGEN_RETUNE_INTERVAL), so a Deployment can set any option through env."""
    name = "HYGEN_" + flag.lstrip("-").upper().replace("-", "_")
    value = os.environ.get(name, default)
    conv = kw.get("type")
    p.add_argument(
        flag,
        default=conv(value) if conv and value is not None else value,  # type: ignore[operator]
        help=f"{help} [${name}]",
        **kw,
    )  # type: ignore[arg-type]


def _client_options(p: argparse.ArgumentParser) -> None:
    """What both the operator and a dispatcher Job need to reach the API and the pods."""
    _option(p, "--control-token-file", "the pods' control token (else $HYGEN_CONTROL_TOKEN)")
    _option(p, "--kubeconfig", "kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    _option(p, "--dispatch-poll", "seconds between BatchJob result polls", "1", type=float)


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
        "and retuning) and dispatch BatchJobs to the pods. Every option also reads the "
        "environment variable shown in brackets.",
    )
    r.add_argument(
        "--namespace",
        action="append",
        help="watch this namespace (repeat); default: all [$HYGEN_NAMESPACES=a,b]",
    )
    opts = [
        ("--pod-image", "pod image of ServingSLOs naming none", "ghcr.io/hygen/hygen-pod:latest"),
        ("--token-secret", "Secret (key 'token') the pods mount; the operator copies its token "
         "into each ServingSLO's namespace", "hygen-control-token"),
        ("--status-interval", "seconds between pod reads, status writes and budget pushes", "10"),
        ("--retune-interval", "minimum seconds between budget changes of one ServingSLO", "30"),
        ("--data-dir", "trace folder inside the pod image, for profiling", "/opt/hygen/data"),
        ("--liveness", "serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz", None),
        ("--operator-image", "image of the dispatcher Jobs (BatchJobs with volume input/output)",
         "ghcr.io/hygen/hygen-operator:latest"),
        ("--dispatcher-service-account", "ServiceAccount of dispatcher Jobs", "hygen-dispatcher"),
        ("--peering", "kopf peering name when running more than one replica: one is active, "
         "the others stand by", None),
        ("--batch-api-port", "serve the cluster-wide Files/Batch API of ServingSLOs with "
         "batchApi on this port", None),
        ("--batch-api-url", "the URL pods reach that port at (the operator's Service)", None),
        ("--batch-api-dir", "the Batch API volume: files and outputs of ServingSLOs whose "
         "batchApi names no storage, under <namespace>/<ServingSLO>/ (the chart mounts a "
         "PersistentVolumeClaim here)", None),
    ]  # fmt: skip
    for flag, help, default in opts:
        floats = ("--status-interval", "--retune-interval")
        typ = float if flag in floats else int if flag == "--batch-api-port" else None
        _option(r, flag, help, default, **({"type": typ} if typ else {}))
    _option(r, "--log-level", "log level", "info", choices=["debug", "info", "warning", "error"])
    _client_options(r)
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
    _client_options(d)
    d.set_defaults(func=_cmd_dispatch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
