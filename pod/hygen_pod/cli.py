"""``hygen-pod``: the pod's command line (demo, predictor fitting, control, tiny model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from hygen_pod.contract.control import OfflineControl
from hygen_pod.contract.metrics import METRICS


def _cmd_demo(args: argparse.Namespace) -> int:
    import logging
    import os

    # vLLM's log (engine details, warnings) goes to a file: the demo's output is its tables.
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "engine.log"
    os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("vllm", "py.warnings", "hygen"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    logging.captureWarnings(True)
    from hygen_pod.dev.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        workdir=workdir,
        data_dir=Path(args.data) if args.data else None,
        online_requests=args.online,
        online_qps=args.online_qps,
        offline_requests=args.offline,
        rounds=args.rounds,
        seed=args.seed,
        pod=not args.no_pod,
        gpu=None if args.no_gpu else "h100",
    )
    print(f"engine log: {log_path}", file=sys.stderr, flush=True)
    run_demo(cfg, emit=lambda line: print(line, flush=True))
    print(f"\nstep trace: {cfg.workdir / 'steps.jsonl'}")
    print(f"predictor:  {cfg.workdir / 'predictor.json'}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    import random

    from hygen_pod.policy.predictor import LatencyPredictor
    from hygen_pod.policy.step_trace import read_trace, timing_samples

    if bool(args.trace) == bool(args.oracle):
        print("error: give either --trace FILE... or --oracle GPU", file=sys.stderr)
        return 2
    if args.oracle:
        from hygen_pod.profiling.oracle import KernelOracle, random_batches, sample

        oracle = KernelOracle(args.oracle, args.model)
        shapes, secs = sample(oracle, random_batches(random.Random(args.seed), args.samples))
        source = f"oracle {args.oracle} {args.model}"
    else:
        recs = []
        for path in args.trace:
            recs.extend(read_trace(path)[args.skip :])
        shapes, secs = timing_samples(recs)
        source = "trace " + ",".join(args.trace)
    if len(shapes) < 20:
        print(f"error: only {len(shapes)} measured steps; capture more", file=sys.stderr)
        return 2
    model, table, n_test = LatencyPredictor.fit_with_holdout(
        shapes, secs, holdout=args.holdout, seed=args.seed
    )
    model.meta["source"] = source
    held = model.meta["heldout_mape"]
    print(f"{'cv MAPE':>8}  features")
    for feats, err in table:
        print(f"{err:>8.2%}  {', '.join(feats)}")
    print(f"chosen: {', '.join(model.features)}; held-out MAPE {held:.2%} on {n_test} steps")
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _reuse_profile(args: argparse.Namespace) -> bool:
    """Copy --reuse to --out when it was made for --spec-hash (a pod restart, a new replica)."""
    from hygen_pod.contract.profile import ProfileDocument

    if not (args.reuse and args.spec_hash and Path(args.reuse).is_file()):
        return False
    try:
        doc = ProfileDocument.load(args.reuse)
    except (ValueError, OSError) as e:
        print(f"not reusing {args.reuse}: {e}", file=sys.stderr)
        return False
    if doc.spec_hash != args.spec_hash:
        return False
    doc.save(args.out)
    print(f"reused {args.reuse} (spec hash {args.spec_hash}); wrote {args.out}")
    return True


def _cmd_profile(args: argparse.Namespace) -> int:
    import os

    from hygen_pod.profiling.profiler import ProfilerSettings, profile

    if _reuse_profile(args):
        return 0
    from hygen_pod.profiling.traces import arxiv_summarization, azure_conversation

    azure = azure_conversation(args.data)
    arxiv = arxiv_summarization(args.data)
    cfg = ProfilerSettings(
        targets=args.targets,
        tolerance=args.tolerance,
        seed=args.seed,
        iters=args.iters,
        confidence=args.confidence,
        online_prefill_caps=[None, *args.online_prefill_caps],
        reference=args.reference.replace("-", "_"),
    )
    if args.oracle:
        from hygen_pod.profiling.profiler import SimRunner
        from hygen_pod.profiling.simulator import offline_requests, online_requests
        from hygen_pod.profiling.slices import requests_per_slice

        step = requests_per_slice(args.online_qps, args.window)
        offline = offline_requests(arxiv, args.offline, args.seed)
        runner = SimRunner(
            args.oracle,
            [
                online_requests(azure, args.start + k * step, args.online_qps, args.window)
                + offline
                for k in range(args.slices)
            ],
            args.window,
        )
    else:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        from hygen_pod.dev.tiny_model import build_tiny_llama
        from hygen_pod.profiling.workload import cpu_offline, cpu_online
        from hygen_pod.vllm_adapter.engine import Engine, EngineOptions, EngineRunner

        model = Path(args.model) if args.model else Path(args.workdir) / "tiny-llama"
        if not args.model and not (model / "model.safetensors").exists():
            build_tiny_llama(model, seed=args.seed)
        eng = Engine(EngineOptions(model=str(model)))
        v = eng.vocab_size
        runner = EngineRunner(
            eng,
            [
                cpu_online(
                    azure,
                    tag=f"prof{k}",
                    start=args.start + k * args.online,
                    count=args.online,
                    qps=args.online_qps,
                    vocab=v,
                    seed=args.seed + 100 * k,
                )
                for k in range(args.slices)
            ],
            cpu_offline(arxiv, tag="prof", count=args.offline, vocab=v, seed=args.seed + 1),
            cpu_offline(arxiv, tag="cap", count=48, vocab=v, seed=args.seed + 2)
            + cpu_online(
                azure,
                tag="cap",
                start=args.start,
                count=16,
                qps=args.online_qps,
                vocab=v,
                seed=args.seed + 3,
            ),
            model=str(model),
        )
    doc = profile(runner, cfg, progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    chunking = f", online prefill cap {doc.online_prefill_cap}" if doc.online_prefill_cap else ""
    doc.spec_hash = args.spec_hash
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    doc.save(args.out)
    print(
        f"budget {doc.budget_ms:.2f} ms{chunking} (offline {doc.offline_tps_budget:.0f} tok/s), "
        f"HyGen* qps {doc.qps:.3f} (offline {doc.offline_tps_qps:.0f} tok/s); "
        f"predictor MAPE {doc.predictor.heldout_mape:.1%}; "
        f"profiling took {doc.profiler_seconds:.0f} s; a pod started with it runs "
        f"{'HyGen* (qps)' if doc.best_mode() == 'qps' else 'HyGen (budget)'}, which did more "
        "offline work"
    )
    if doc.online_behind:
        print(
            f"warning: online work alone fell behind the engine on {len(doc.online_behind)} "
            f"of {doc.slices} profiling slice(s): the online load exceeds this engine, so the "
            "settings above are measured against an overloaded online-only run; add capacity "
            "or lower the online load (online_behind in the profile)",
            file=sys.stderr,
        )
    print(f"wrote {args.out}")
    return 0


def _control_of(args: argparse.Namespace) -> OfflineControl:
    """The control the options ask for, or ValueError naming the option at fault."""
    cap = args.online_prefill_cap
    if cap is not None and cap < 1:
        raise ValueError(f"--online-prefill-cap must be a token count >= 1, not {cap}")
    control = _mode_control(args)
    if args.yield_to_prompts and control.mode != "budget":
        raise ValueError("--yield-to-prompts applies to --mode budget only")
    return control.model_copy(
        update={"online_prefill_cap": cap, "yield_to_prompts": args.yield_to_prompts}
    )


def _mode_control(args: argparse.Namespace) -> OfflineControl:
    if args.mode == "budget":
        if args.qps is not None:
            raise ValueError("--qps applies to --mode qps only")
        if args.budget_ms is None:
            raise ValueError("--budget-ms is required with --mode budget (0 = online only)")
        if not args.budget_ms >= 0 or args.budget_ms == float("inf"):
            raise ValueError(f"--budget-ms must be a finite number >= 0, not {args.budget_ms:g}")
        return OfflineControl(mode="budget", budget_ms=args.budget_ms)
    if args.budget_ms is not None:
        raise ValueError("--budget-ms applies to --mode budget only")
    if args.qps is None:
        raise ValueError("--qps is required with --mode qps: a rate, 0 (online only) or 'uncapped'")
    if args.qps == "uncapped":
        return OfflineControl(mode="qps", qps=None)
    try:
        qps = float(args.qps)
    except ValueError:
        raise ValueError(f"--qps must be a number >= 0 or 'uncapped', not {args.qps!r}") from None
    if not qps >= 0 or qps == float("inf"):
        raise ValueError(f"--qps must be a finite number >= 0 or 'uncapped', not {args.qps}")
    return OfflineControl(mode="qps", qps=qps)


def _cmd_control(args: argparse.Namespace) -> int:
    from hygen_pod.contract.control import write_control

    control = _control_of(args)
    folder = Path(args.file).resolve().parent
    if not folder.is_dir():
        raise ValueError(f"--file {args.file}: folder {folder} does not exist")
    write_control(args.file, control)
    print(control.model_dump_json())
    return 0


def _cmd_tiny(args: argparse.Namespace) -> int:
    from hygen_pod.dev.tiny_model import build_tiny_llama

    print(build_tiny_llama(args.out, seed=args.seed))
    return 0


def _positive_int(option: str, unit: str = "token"):
    """argparse type: an integer >= 1, with an error naming ``option``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option}: {text!r} is not a whole number") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{option}: must be >= 1 {unit}, not {n}")
        return n

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hygen-pod",
        description="HyGen serving pod: online/offline co-location in one vLLM engine.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo",
        help="local main job: tiny model on the CPU engine, Azure trace online + offline batch",
        description="Fit the predictor on captured steps, then replay a slice of the Azure "
        "conversation trace alone, with offline work but no budget, and with HyGen, in "
        "interleaved rounds; print medians and a conclusion (or 'inconclusive' when the "
        "machine is too noisy). Then the same policies on a simulated H100, and through "
        "the serving pod (hygen-pod serve) over HTTP while a batch runs.",
    )
    d.add_argument("--workdir", default=".hygen-demo", help="model, trace and predictor go here")
    d.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    d.add_argument("--online", type=int, default=24, help="online requests per replay")
    d.add_argument("--online-qps", type=float, default=3.0, help="online request rate")
    d.add_argument("--offline", type=int, default=48, help="offline backlog per replay")
    d.add_argument(
        "--rounds", type=int, default=3, help="rounds of all three policies (rotated order)"
    )
    d.add_argument("--no-gpu", action="store_true", help="skip the simulated H100 stage")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--no-pod", action="store_true", help="skip the last stage through the serving pod"
    )
    d.set_defaults(func=_cmd_demo)

    f = sub.add_parser(
        "fit-predictor",
        help="fit the batch latency predictor from captured steps or the GPU kernel oracle",
    )
    f.add_argument("--trace", nargs="+", help="step trace JSONL file(s) written by the scheduler")
    f.add_argument("--oracle", choices=["a100", "h100", "h200"], help="sample the GPU oracle")
    f.add_argument("--model", default="meta-llama/Meta-Llama-3.1-8B", help="oracle model")
    f.add_argument("--samples", type=int, default=1000, help="oracle batches to sample")
    f.add_argument("--skip", type=int, default=5, help="warm-up steps to drop per trace")
    f.add_argument("--holdout", type=float, default=0.2, help="fraction held out for MAPE")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True, help="predictor JSON to write")
    f.set_defaults(func=_cmd_fit)

    pr = sub.add_parser(
        "profile",
        help="SLO-aware profiling: fit the predictor, find the largest budget and offline QPS",
        description="Replay a slice of the Azure conversation trace with an arXiv offline "
        "backlog, on the CPU engine (default) or simulated on a GPU oracle (--oracle), and "
        "bisect for the largest budget / QPS keeping the targets within tolerance.",
    )
    pr.add_argument("--oracle", choices=["a100", "h100", "h200"], help="simulate this GPU")
    pr.add_argument("--model", help="model folder for the CPU engine (default: tiny model)")
    pr.add_argument("--workdir", default=".hygen-profile", help="tiny model goes here")
    pr.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    pr.add_argument(
        "--targets",
        nargs="+",
        default=["p99_tbt"],
        choices=METRICS,
    )
    pr.add_argument("--tolerance", type=float, default=0.1, help="e.g. 0.1 = 10%%")
    pr.add_argument("--start", type=int, default=1000, help="first trace request of the slice")
    pr.add_argument("--online", type=int, default=32, help="online requests (CPU engine)")
    pr.add_argument(
        "--slices",
        type=_positive_int("--slices", "slice"),
        default=1,
        help="consecutive trace slices from --start, each replayed for every setting: all "
        "must pass and, with several, a new slice by the prediction bound of their spread "
        "(use 6: it met all 96 cells of the simulated matrices, each of the four metrics "
        "on its own; 3 missed three; docs/benchmarks.md)",
    )
    pr.add_argument("--online-qps", type=float, default=3.0)
    pr.add_argument("--offline", type=int, default=64, help="offline backlog size")
    pr.add_argument("--window", type=float, default=60.0, help="simulated seconds (--oracle)")
    pr.add_argument("--iters", type=int, default=5, help="bisection steps per search")
    pr.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        help="a setting passes when the targets hold on this share of bootstrap resamples "
        "of the online requests (0: a single point check)",
    )
    pr.add_argument(
        "--online-prefill-caps",
        nargs="*",
        type=_positive_int("--online-prefill-caps"),
        default=[],
        metavar="TOKENS",
        help="online prefill caps to search jointly with the budget and QPS (vLLM's own "
        "chunking is always tried too); e.g. 1024 768 512 384 256 for P99 TBT targets",
    )
    pr.add_argument(
        "--reference",
        choices=["vllm-chunking", "chosen-chunking"],
        default="vllm-chunking",
        help="what the tolerance is measured against: online only under vLLM's chunking, "
        "or under the cap tried (a cap whose online-only run is itself outside the "
        "tolerance of vLLM's chunking is then refused)",
    )
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--out", required=True, help="profile JSON to write")
    pr.add_argument("--spec-hash", help="record this hash in the profile (set by the operator)")
    pr.add_argument(
        "--reuse",
        help="an earlier profile: copied to --out instead of profiling when its "
        "spec hash equals --spec-hash",
    )
    pr.set_defaults(func=_cmd_profile)

    c = sub.add_parser(
        "set-control", help="write the offline control file a running scheduler watches"
    )
    c.add_argument("--file", required=True, help="the control file (its folder must exist)")
    c.add_argument("--mode", choices=["budget", "qps"], default="budget")
    c.add_argument(
        "--budget-ms", type=float, help="budget mode: per-iteration latency budget; 0 = online only"
    )
    c.add_argument(
        "--qps",
        help="qps mode: offline request starts per second; 0 = online only; 'uncapped'",
    )
    c.add_argument(
        "--online-prefill-cap",
        type=int,
        metavar="TOKENS",
        help="most online prefill tokens in a step that carries online decodes "
        "(default: vLLM's own chunking)",
    )
    c.add_argument(
        "--yield-to-prompts",
        action="store_true",
        help="budget mode: no offline work in a step that serves an online prompt chunk or "
        "leaves an online request waiting (profiling tries it for TTFT targets)",
    )
    c.set_defaults(func=_cmd_control)

    sub.add_parser(
        "serve",
        help="run the serving pod (vLLM OpenAI API + HyGen scheduler, batch, offline, "
        "control, metrics); see `hygen-pod serve --help`",
        add_help=False,
    )

    t = sub.add_parser("tiny-model", help="write a tiny random-weight Llama + tokenizer")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_tiny)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        # vLLM's own parser takes every engine/server option; ours are added to it.
        from hygen_pod.vllm_adapter.server import main as serve_main

        try:
            return serve_main(argv[1:])
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as e:  # one line naming the field, not pydantic's page with a URL
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        print(f"error: {where}: {err['msg']}" if where else f"error: {err['msg']}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
