"""The offline queue of the working tree against a revision's, side by side.

    python bench/offline_queue_ab.py --against HEAD~1
    python bench/offline_queue_ab.py --against HEAD~1 --queued 3000 --prefixes 8 --shared 192

`scheduler_ab.py` prints per-step medians, and a cost paid per started offline prompt
(1.6 a step at 256 running with churn) is smaller than their run-to-run spread, so it
hides there. This times the queue alone on the scheduler's
pattern (add the backlog, then peek and pop in turn) with both implementations in the
same process, taking turns run by run. Prompts are ``--shared`` tokens of one of
``--prefixes`` random prefixes plus random tokens to 200, like the overhead harness's
backlog. The run fails unless both pop the same order: a speed-up must not change it.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pod"))

from hygen_pod.policy import offline_queue as tree  # noqa: E402

PATH = "pod/hygen_pod/policy/offline_queue.py"


def load_revision(rev: str, into: Path) -> ModuleType:
    """The revision's offline_queue module (it imports only the standard library)."""
    got = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{PATH}"], capture_output=True, text=True
    )
    if got.returncode:
        raise SystemExit(f"git show {rev}:{PATH}: {got.stderr.strip()}")
    f = into / "offline_queue_rev.py"
    f.write_text(got.stdout)
    spec = importlib.util.spec_from_file_location("offline_queue_rev", f)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up while it loads
    spec.loader.exec_module(mod)
    return mod


def prompts(n: int, prefixes: int, shared: int, length: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    heads = [[rng.randrange(150_000) for _ in range(shared)] for _ in range(prefixes)]
    return [
        rng.choice(heads) + [rng.randrange(150_000) for _ in range(length - shared)]
        for _ in range(n)
    ]


def one_run(mod: ModuleType, backlog: list[list[int]], pops: int) -> tuple[float, float, list]:
    """Microseconds per add and per peek+pop, and the pop order."""
    q = mod.OfflineQueue(max_bypass=64)
    t = time.perf_counter()
    for i, p in enumerate(backlog):
        q.add(str(i), p, i)
    t_add = (time.perf_counter() - t) / len(backlog) * 1e6
    order = []
    t = time.perf_counter()
    for _ in range(pops):
        q.peek()
        order.append(q.pop())
    t_pop = (time.perf_counter() - t) / pops * 1e6
    return t_add, t_pop, order


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="git revision to compare with")
    ap.add_argument("--queued", type=int, default=3000, help="backlog size")
    ap.add_argument("--pops", type=int, default=1000, help="peek+pop pairs timed per run")
    ap.add_argument("--prefixes", type=int, default=8)
    ap.add_argument("--shared", type=int, default=192, help="tokens of a shared prefix")
    ap.add_argument("--length", type=int, default=200, help="prompt tokens")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not 0 <= a.shared <= a.length or a.pops > a.queued:
        ap.error("need 0 <= --shared <= --length and --pops <= --queued")
    with tempfile.TemporaryDirectory() as tmp:
        rev = load_revision(a.against, Path(tmp))
    sides = {"tree": tree, "other": rev}
    times: dict[str, list[tuple[float, float]]] = {"tree": [], "other": []}
    for r in range(a.repeats):
        backlog = prompts(a.queued, a.prefixes, a.shared, a.length, a.seed + r)
        orders = {}
        for name in ("tree", "other") if r % 2 == 0 else ("other", "tree"):
            t_add, t_pop, orders[name] = one_run(sides[name], backlog, a.pops)
            times[name].append((t_add, t_pop))
        if orders["tree"] != orders["other"]:
            raise SystemExit(f"run {r}: the two queues popped different orders")
    print(
        f"{a.queued} queued {a.length}-token prompts ({a.prefixes} prefixes of {a.shared}), "
        f"{a.pops} peek+pop; medians of {a.repeats} runs, microseconds"
    )
    print(f"{'':>10} {'tree':>8} {'other':>8} {'tree/other':>10}")
    for i, what in enumerate(("add", "peek+pop")):
        mt = statistics.median(t[i] for t in times["tree"])
        mo = statistics.median(t[i] for t in times["other"])
        print(f"{what:>10} {mt:8.1f} {mo:8.1f} {mt / mo:10.2f}")


if __name__ == "__main__":
    main()
