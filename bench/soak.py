"""Soak: repeat the reliability scenarios and print the table of docs/reliability.md.

Each round of each fault scenario runs on a fresh emulated cluster (API emulator, the real
operator process, real pod processes with the fake engine) with its own seed, so the kill
points and fault timings differ per round. ``--engine`` adds the online-burst load scenario
on a real vLLM CPU pod (tiny generated model, predictor fitted on this machine first).
Not a pass/fail test: it reports; the tests in tests/reliability assert.

    python bench/soak.py --rounds 5 [--engine] [--csv bench/results/soak.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.kube.cluster import running_cluster  # noqa: E402
from tests.reliability.scenarios import SCENARIOS, Outcome, run_scenario  # noqa: E402


def engine_round(workdir: Path, seed: int) -> Outcome:
    """The online-burst scenario on a real `hygen-pod serve` with a fitted predictor."""
    from hygen_pod.dev.tiny_model import build_tiny_llama
    from tests.reliability.load import budget_pod, online_burst

    model = build_tiny_llama(workdir / "tiny")
    pred = fit_predictor(model, workdir / "predictor.json")
    pod = budget_pod(model, workdir, pred).start()
    try:
        out, _ = online_burst(pod.url)
    finally:
        pod.terminate()
    return out


def fit_predictor(model: Path, path: Path) -> Path:
    """Fit the step-latency predictor on this machine's engine (as the integration tests do)."""
    import random

    from vllm import LLM

    from hygen_pod.contract.control import OfflineControl
    from hygen_pod.policy.predictor import LatencyPredictor
    from hygen_pod.policy.step_trace import timing_samples
    from tests.helpers.engine import Harness, Req, engine_kwargs
    from tests.helpers.recording import RecordingHyGenScheduler

    llm = LLM(**engine_kwargs(model, RecordingHyGenScheduler))
    h = Harness(llm)
    h.scheduler.set_control(OfflineControl(mode="qps", qps=None))
    rng = random.Random(101)
    h.run([Req(rid=f"r{i}", tokens=[rng.randrange(10, 500) for _ in range(rng.randint(8, 500))],
               max_tokens=rng.randint(4, 32), offline=i % 3 != 0) for i in range(72)])  # fmt: skip
    shapes, secs = timing_samples(list(h.scheduler.trace)[5:])
    model_, _ = LatencyPredictor.select_and_fit(shapes, secs)
    model_.save(path)
    del llm
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds per fault scenario")
    ap.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--engine", action="store_true", help="add the real-engine load scenario")
    ap.add_argument("--csv", type=Path, help="also write one row per round here")
    args = ap.parse_args(argv)

    rows: list[tuple[str, int, Outcome]] = []
    for name in args.scenarios:
        for seed in range(1, args.rounds + 1):
            with tempfile.TemporaryDirectory() as d, running_cluster(Path(d)) as c:
                try:
                    out = run_scenario(name, c, seed)
                except Exception as e:  # a round that did not converge is reported, not hidden
                    out = Outcome(name, 0, notes=[f"FAILED: {e!r}"[:300]])
                    out.lost = -1
            rows.append((name, seed, out))
            print(f"{name} #{seed}: lost {out.lost}, dup {out.duplicates}, online "
                  f"{out.online_errors}/{out.online_sent}, {out.seconds:.0f} s; "
                  f"{'; '.join(out.notes)}", flush=True)  # fmt: skip
    if args.engine:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.monotonic()
            out = engine_round(Path(d), 1)
            out.seconds = time.monotonic() - t0
        rows.append(("online_burst", 1, out))
        print("online_burst:", "; ".join(out.notes), flush=True)

    print("\n| scenario | runs | lines per run | lost | duplicates | online errors / sent |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in dict.fromkeys(n for n, _, _ in rows):
        outs = [o for n, _, o in rows if n == name]
        sent = [o.online_sent for o in outs if o.online_sent is not None]
        errs = [o.online_errors or 0 for o in outs if o.online_sent is not None]
        online = f"{sum(errs)} / {sum(sent)}" if sent else "n/a"
        failed = sum(1 for o in outs if o.lost < 0)
        lost = f"did not converge: {failed}" if failed else sum(o.lost for o in outs)
        print(f"| {outs[0].scenario} | {len(outs)} | {outs[0].lines} | {lost} | "
              f"{sum(o.duplicates for o in outs)} | {online} |")  # fmt: skip
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["scenario", "seed", "lines", "lost", "duplicates", "online_sent",
                        "online_errors", "seconds", "notes"])  # fmt: skip
            for name, seed, o in rows:
                w.writerow([name, seed, o.lines, o.lost, o.duplicates, o.online_sent,
                            o.online_errors, round(o.seconds, 1), " | ".join(o.notes)])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
