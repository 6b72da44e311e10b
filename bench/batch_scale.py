"""A large BatchJob end to end: operator, dispatcher Job, pods and object storage.

On the emulated cluster (the tests' API emulator and kubelet stand-in), with a local S3 API
server (moto) holding the input and the output, N lines (default 100,000) go from
``s3://`` input to ``s3://`` output through the real operator and its dispatcher Job to R
serving pods (default 4) whose fake engine answers in ``--engine-ms``. Prints lines/s end to
end, the operator's and the dispatcher's peak resident memory, API-server requests per 1,000
lines, and status patches per minute; and checks the output holds exactly one result per
line. Not a test: numbers depend on the machine (the 2-core VM runs every process here).
With ``--storage operator-volume`` the input and output are files on the operator's Batch
API volume instead (what the cluster Batch API uses by default), and the operator itself
dispatches the job: its peak memory then includes the dispatching.

    .venv/bin/python bench/batch_scale.py --lines 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.kube.cluster import (  # noqa: E402
    NS,
    finished,
    ready,
    running_cluster,
    secret,
    serving_slo,
)
from tests.helpers.s3_server import s3_server  # noqa: E402


def vm_hwm_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM), in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakWatch:
    """Samples VmHWM and CPU time of processes found by callables: each one's highest, and
    the CPU used while watched (a process running at the start counts from then on)."""

    def __init__(self, pids: dict[str, object]) -> None:
        self.pids = pids  # name -> callable returning the current pids
        self.peak: dict[str, float] = {}
        self.cpu: dict[tuple[str, int], float] = {}
        self.base: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakWatch:
        for name, get in self.pids.items():
            for pid in get():  # type: ignore[operator]
                self.base[(name, pid)] = cpu_s(pid)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, get in self.pids.items():
                for pid in get():  # type: ignore[operator]
                    self.peak[name] = max(self.peak.get(name, 0.0), vm_hwm_mb(pid))
                    key = (name, pid)
                    self.cpu[key] = max(self.cpu.get(key, 0.0), cpu_s(pid))
            time.sleep(0.2)

    def cpu_by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, v in self.cpu.items():
            out[key[0]] = out.get(key[0], 0.0) + v - self.base.get(key, 0.0)
        return out


def input_lines(n: int, prompt_bytes: int) -> bytes:
    pad = "p" * prompt_bytes
    rows = (
        {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/completions",
         "body": {"model": "tiny", "prompt": f"{i} {pad}", "max_tokens": 8}}
        for i in range(n)
    )  # fmt: skip
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--engine-ms", type=float, default=5.0, help="the fake engine's answer time")
    p.add_argument("--parallelism", type=int, default=256, help="BatchJob spec.parallelism")
    p.add_argument("--prompt-bytes", type=int, default=200)
    p.add_argument("--dispatch-poll", type=float, default=0.5, help="seconds between polls")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--storage", choices=["s3", "operator-volume"], default="s3",
                   help="where input and output live (operator-volume: the operator "
                   "dispatches)")  # fmt: skip
    args = p.parse_args(argv)
    on_s3 = args.storage == "s3"

    with TemporaryDirectory() as tmp, s3_server() as s3:
        bucket = s3.bucket()
        volume = Path(tmp) / "batch-api"
        data = input_lines(args.lines, args.prompt_bytes)
        if on_s3:
            s3.put(bucket, "in.jsonl", data)
        else:
            (volume / NS / "chat").mkdir(parents=True)
            (volume / NS / "chat" / "in.jsonl").write_bytes(data)
        env = {"FAKE_ENGINE_DELAY_S": str(args.engine_ms / 1e3)}
        with running_cluster(Path(tmp), **env) as c:
            c.operator.stop()  # restart it with this run's poll interval
            c.operator.cmd += ["--dispatch-poll", f"{args.dispatch_poll:g}"]  # the last one wins
            c.operator.cmd += ["--batch-api-dir", str(volume)]
            c.operator.start()
            keys = {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}
            secret(c.api, "s3-keys", keys)
            c.api.create(serving_slo(replicas=args.replicas), "servingslos")
            ready(c, timeout_s=180)
            io = {
                "input": {"s3": {"url": f"s3://{bucket}/in.jsonl"}},
                "output": {"s3": {"url": f"s3://{bucket}/out.jsonl"}},
                "objectStore": {"endpoint": s3.endpoint, "credentialsSecret": "s3-keys"},
            } if on_s3 else {
                "input": {"operatorVolume": {"path": "chat/in.jsonl"}},
                "output": {"operatorVolume": {"path": "chat/out.jsonl"}},
            }  # fmt: skip
            job = {
                "apiVersion": "hygen.io/v1alpha1", "kind": "BatchJob",
                "metadata": {"name": "scale", "namespace": NS},
                "spec": {
                    "servingSlo": "chat", "endpoint": "/v1/completions",
                    "parallelism": args.parallelism, **io,
                },
            }  # fmt: skip
            log = c.api.emulator.log
            start_log = len(log)

            def alive(*procs: object) -> list[int]:
                return [p.pid for p in procs if p is not None and p.poll() is None]  # type: ignore[attr-defined]

            watch = PeakWatch({
                "operator": lambda: alive(c.operator.proc),
                "dispatcher": lambda: alive(c.kubelet.jobs.get("scale-dispatch")),
                "pods": lambda: alive(*(r.proc for r in c.kubelet.running("chat"))),
                "s3 server": lambda: [s3.pid],
                "emulator+kubelet (bench process)": lambda: [os.getpid()],
            })  # fmt: skip
            with watch:
                t0 = time.perf_counter()
                c.api.create(job, "batchjobs")
                st = finished(c, "scale", args.timeout)
                wall = time.perf_counter() - t0
                time.sleep(0.5)
            calls = log[start_log:]
        out = (
            s3.get(bucket, "out.jsonl") if on_s3 else (volume / NS / "chat/out.jsonl").read_bytes()
        )
    ids = Counter(json.loads(x)["custom_id"] for x in out.splitlines())
    exact = len(ids) == args.lines and set(ids.values()) == {1}
    status_patches = sum(
        1 for m, path, _ in calls if m == "PATCH" and "/batchjobs/scale/status" in path
    )
    by_kind = Counter(f"{m} {path.split('/')[-2] if path.count('/') > 4 else path}"
                      for m, path, _ in calls)  # fmt: skip
    print(f"{args.lines} lines, {args.replicas} pods, engine {args.engine_ms:g} ms, "
          f"parallelism {args.parallelism}, poll {args.dispatch_poll:g} s, "
          f"storage {args.storage}")  # fmt: skip
    print(f"phase {st['phase']}: {st.get('completed')} completed, {st.get('failed')} failed; "
          f"output exactly one result per line: {exact}")  # fmt: skip
    rows = [
        ("end to end", f"{args.lines / wall:,.0f} lines/s ({wall:.1f} s)"),
        ("operator peak RSS", f"{watch.peak.get('operator', 0):.0f} MB"),
        ("dispatcher peak RSS", f"{watch.peak.get('dispatcher', 0):.0f} MB"),
        ("API-server requests / 1,000 lines", f"{1000 * len(calls) / args.lines:.1f}"),
        ("status patches / minute", f"{status_patches / (wall / 60):.1f}"),
    ]
    for k, v in rows:
        print(f"  {k:<36} {v}")
    print("  API requests by verb and resource:", dict(by_kind.most_common(8)))
    cpu = watch.cpu_by_name()

    print("  CPU seconds during the job (2 cores = 2 s per second of wall time):")
    for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"    {k:<36} {v:6.1f} s  ({v / wall:.0%} of a core)")
    return 0 if exact and st["phase"] == "Succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
