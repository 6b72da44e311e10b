"""Cross-check the two GPU oracles: aiconfigurator-core's kernel tables vs Vidur's
per-operator measurements, for the non-attention part of a Llama-3-8B forward on A100.

    python bench/oracle_crosscheck.py [--data DIR]

Prints both and their ratio per token count. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import sys

from hygen_pod.profiling.oracle import KernelOracle
from hygen_pod.profiling.vidur import VidurMLP

TOKENS = (1, 16, 64, 256, 512, 1024, 2048, 4096, 8192)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="shared data folder (default: $HYGEN_DATA or ../shared/data)")
    args = ap.parse_args()
    try:
        vidur = VidurMLP(data_dir=args.data)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    aic = KernelOracle("a100")
    print("non-attention forward of Llama-3(.1)-8B on A100, one step of N tokens")
    print(f"{'tokens':>7} {'aiconfigurator ms':>18} {'vidur ms':>9} {'aic / vidur':>12}")
    for n in TOKENS:
        a = aic.shared_ms(n)
        v = vidur.forward_ms(n)
        print(f"{n:>7} {a:>18.3f} {v:>9.3f} {a / v:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
