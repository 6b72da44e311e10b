"""Predictor accuracy: chosen feature set vs the paper's, on GPU oracles and captured steps.

Prints held-out MAPE / P95 error per GPU and the ratio against the paper's feature
set fitted side by side on the same samples. Not a pass/fail test.

    python bench/predictor_accuracy.py [--trace steps.jsonl ...] [--samples 1000]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from hygen_pod.policy.predictor import BASE_FEATURES, LatencyPredictor
from hygen_pod.policy.step_trace import read_trace, timing_samples


def evaluate(name, train, test, rows):
    chosen, _ = LatencyPredictor.select_and_fit(*train)
    paper = LatencyPredictor.fit(*train, features=BASE_FEATURES)
    for label, m in (("paper set", paper), ("chosen", chosen)):
        errs = np.array(m.errors(*test))
        t0 = time.perf_counter()
        for s in test[0][:2000]:
            m.predict(s)
        us = (time.perf_counter() - t0) / min(len(test[0]), 2000) * 1e6
        rows.append((name, label, errs.mean(), np.percentile(errs, 95), us, m.features))
    paper_mape, chosen_mape = rows[-2][2], rows[-1][2]
    rows[-1] = (*rows[-1][:5], rows[-1][5], paper_mape / chosen_mape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", nargs="*", default=[], help="captured step traces (JSONL)")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows: list = []
    from hygen_pod.profiling.oracle import KernelOracle, random_batches, sample

    for gpu in ("a100", "h100"):
        o = KernelOracle(gpu)
        train = sample(o, random_batches(random.Random(args.seed), args.samples))
        held = [
            b
            for b in random_batches(random.Random(args.seed + 1), 3 * args.samples)
            if b.prefills and b.decodes
        ][: args.samples // 2]
        evaluate(f"Llama-3.1-8B {gpu.upper()} (oracle)", train, sample(o, held), rows)
    for path in args.trace:
        shapes, secs = timing_samples(read_trace(path)[5:])
        idx = list(range(len(shapes)))
        random.Random(args.seed).shuffle(idx)
        cut = int(0.8 * len(idx))
        train = ([shapes[i] for i in idx[:cut]], [secs[i] for i in idx[:cut]])
        test = ([shapes[i] for i in idx[cut:]], [secs[i] for i in idx[cut:]])
        evaluate(f"CPU engine ({path})", train, test, rows)

    print(
        f"{'workload':<34} {'model':<10} {'MAPE':>7} {'P95 err':>8} {'us/call':>8} "
        f"{'paper/chosen':>12}  features"
    )
    for r in rows:
        ratio = f"{r[6]:.2f}x" if len(r) > 6 else ""
        print(
            f"{r[0]:<34} {r[1]:<10} {r[2]:>7.2%} {r[3]:>8.2%} {r[4]:>8.2f} {ratio:>12}  "
            f"{','.join(r[5])}"
        )


if __name__ == "__main__":
    main()
