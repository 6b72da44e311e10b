"""``hygen-operator``: the control plane's command line."""

from __future__ import annotations

import argparse
import sys


def _cmd_crds(args: argparse.Namespace) -> int:
    from hygen_operator.crd import write

    for p in write(args.out):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hygen-operator",
        description="HyGen operator: ServingSLO and BatchJob custom resources for vLLM pods.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the models")
    c.add_argument("--out", default="crds", help="folder to write servingslos.yaml/batchjobs.yaml")
    c.set_defaults(func=_cmd_crds)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
