"""Fault scenarios on an emulated cluster (real operator, real pod processes, fake engine).

Each scenario drives one kind of trouble through a BatchJob and returns an `Outcome`: how
many lines were expected, how many have no result (lost), how many custom_ids have more
than one result (duplicates), and, where online traffic ran beside it, how many online
requests failed. The reliability tests run each once; `bench/soak.py` runs them many times
and prints the table in docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from hygen_operator import manifests
from tests.helpers.kube.cluster import (
    NS,
    Cluster,
    batch_job,
    batch_lines,
    claim,
    finished,
    ready,
    serving_slo,
)


@dataclass
class Outcome:
    scenario: str
    lines: int  # lines whose result is expected (good ones)
    lost: int = 0  # expected custom_ids with no result
    duplicates: int = 0  # results beyond the first for one custom_id
    online_sent: int | None = None  # None: no online traffic in this scenario
    online_errors: int | None = None
    breaches: int = 0  # attacks that succeeded (read, cancel, delete, inject), all kinds
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def results(c: Cluster, job: str) -> list[dict[str, Any]]:
    """The job's output lines (ConfigMap sink)."""
    data = (c.api.get("configmaps", NS, f"{job}-out") or {}).get("data") or {}
    return [json.loads(v) for k, v in sorted(data.items()) if k.startswith("line-")]


def tally(out: Outcome, records: list[dict[str, Any]], expected: list[str]) -> Outcome:
    """Fill lost/duplicates from the output records against the expected custom_ids."""
    seen = Counter(r["custom_id"] for r in records)
    out.lost = sum(1 for cid in expected if seen[cid] == 0)
    out.duplicates = sum(n - 1 for n in seen.values() if n > 1)
    return out


class OnlineTraffic:
    """Online requests started at ``rps`` (each on a worker, so a slow answer does not slow
    the rate) to the ServingSLO's Ready pods, picked from the API the way a Service's
    endpoints are (refreshed every ``refresh_s``); counts requests that failed."""

    def __init__(
        self,
        c: Cluster,
        slo: str,
        rps: float = 10.0,
        refresh_s: float = 0.25,
        api_key: str | None = None,
    ) -> None:
        self.c, self.slo, self.period, self.refresh_s = c, slo, 1.0 / rps, refresh_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.sent = self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _endpoints(self) -> list[int]:
        return endpoints(self.c, self.slo)

    def _one(self, http: httpx.Client, port: int | None) -> None:
        try:
            if port is None:
                raise RuntimeError("no Ready endpoint")
            r = http.post(
                f"http://127.0.0.1:{port}/v1/completions",
                json={"model": "tiny", "prompt": "online", "max_tokens": 4},
                headers=self.headers,
            )
            r.raise_for_status()
        except Exception as e:
            with self._lock:
                self.errors += 1
                self.last_error = repr(e)

    def _run(self) -> None:
        rng = random.Random(7)
        ports: list[int] = []
        fresh_at = 0.0
        with httpx.Client(timeout=10) as http, ThreadPoolExecutor(8) as pool:
            while not self._stop.wait(self.period):
                if time.monotonic() - fresh_at > self.refresh_s:
                    ports, fresh_at = self._endpoints(), time.monotonic()
                self.sent += 1
                pool.submit(self._one, http, rng.choice(ports) if ports else None)

    def __enter__(self) -> OnlineTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(15)


def endpoints(c: Cluster, slo: str, port: str = "http") -> list[int]:
    """Ports named ``port`` of the ServingSLO's Ready pods: with "http", what its Service
    would balance over; "admin" is where the operator's routes are."""
    ports = []
    for p in c.api.list("pods", NS):
        if (p["metadata"].get("labels") or {}).get(manifests.SLO_LABEL) != slo:
            continue
        conds = {x["type"]: x["status"] for x in p.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True":
            named = {pt["name"]: pt["containerPort"] for pt in p["spec"]["containers"][0]["ports"]}
            if port in named:
                ports.append(named[port])
    return ports


def progress(c: Cluster, job: str) -> int:
    return c.status("batchjobs", job).get("completed", 0)


def run_job(
    c: Cluster,
    name: str,
    n: int,
    during: Callable[[], None],
    *,
    parallelism: int = 8,
    timeout_s: float = 180,
) -> tuple[dict[str, Any], list[str]]:
    """Create a BatchJob of ``n`` good lines, call ``during()`` while it runs, wait for the
    end; returns the final status and the expected custom_ids."""
    c.api.create(batch_job(name, "chat", batch_lines(n), parallelism=parallelism), "batchjobs")
    during()
    st = finished(c, name, timeout_s)
    assert st["phase"] == "Succeeded", st
    return st, [f"req-{i}" for i in range(n)]


def wait_progress(c: Cluster, job: str, at_least: int, timeout_s: float = 60) -> None:
    c.wait(lambda: progress(c, job) >= at_least, timeout_s, f"{job}: {at_least} results")


# ----------------------------------------------------------------- scenarios
def pod_kill9(c: Cluster, rng: random.Random, n: int = 150, kills: int = 3) -> Outcome:
    """kill -9 a random serving pod at random points of a batch, ``kills`` times."""
    out = Outcome("pod kill -9 mid-batch", n)
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.5"  # requests in flight when the kill comes
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    points = sorted(rng.uniform(0.05, 0.8) for _ in range(kills))

    def kill() -> None:
        for f in points:
            wait_progress(c, "b", int(f * n))
            victim = rng.choice(c.kubelet.running("chat"))
            restarts = victim.restarts
            at = progress(c, "b")
            assert at < n, "the job ended before the kill"
            c.kubelet.kill9(victim.name)
            out.notes.append(f"killed {victim.name} at {at}/{n}")
            c.wait(lambda v=victim, r=restarts: v.restarts > r and v.ready, 30, "pod back")

    _, expected = run_job(c, "b", n, kill, parallelism=4)
    return tally(out, results(c, "b"), expected)


def operator_restarts(c: Cluster, rng: random.Random, n: int = 150) -> Outcome:
    """kill -9 the operator mid-reconcile (Deployment created, not Ready yet) and twice
    mid-job, with online traffic running."""
    out = Outcome("operator kill -9 mid-reconcile and mid-job", n)
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.3"
    c.api.create(serving_slo(), "servingslos")
    c.wait(lambda: c.api.get("deployments", NS, "chat", "apps"), 30, "Deployment created")
    c.operator.kill9()
    c.operator.start()
    ready(c)
    deps = [d["metadata"]["name"] for d in c.api.list("deployments", NS, "apps")]
    assert deps == ["chat"], deps
    with OnlineTraffic(c, "chat") as online:

        def restart() -> None:
            for f in sorted(rng.uniform(0.1, 0.7) for _ in range(2)):
                wait_progress(c, "b", int(f * n))
                at = progress(c, "b")
                assert at < n, "the job ended before the restart"
                out.notes.append(f"operator killed at {at}/{n}")
                c.operator.kill9()
                time.sleep(rng.uniform(0, 2))
                c.operator.start()

        _, expected = run_job(c, "b", n, restart)
    out.online_sent, out.online_errors = online.sent, online.errors
    return tally(out, results(c, "b"), expected)


def api_faults(c: Cluster, rng: random.Random, n: int = 150) -> Outcome:
    """409s, 500s (some after the write applied), slow responses and dropped watch streams
    from the API server, during reconcile and during a job, with online traffic running."""
    out = Outcome("API 409/500/slow/dropped watches", n)
    api = c.api
    api.inject("POST", "deployments", 500, after_apply=True)
    api.inject("POST", "services", 409)
    api.inject("PATCH", "servingslos", 500, subresource="status", times=3)
    api.inject("GET", "configmaps", 0, delay_s=3.0, times=2)  # slow, then answered
    api.inject("GET", "pods", 0, delay_s=2.0, times=3)
    c.api.create(serving_slo(), "servingslos")
    ready(c, timeout_s=120)
    with OnlineTraffic(c, "chat") as online:

        def trouble() -> None:
            api.inject("PATCH", "configmaps", 500, times=3, after_apply=True)
            api.inject("PATCH", "batchjobs", 409, subresource="status", times=3)
            api.inject("GET", "pods", 500, times=3)
            api.inject("PATCH", "batchjobs", 0, subresource="status", delay_s=4.0, times=2)
            for _ in range(3):
                time.sleep(rng.uniform(1, 3))
                api.drop_watches()

        _, expected = run_job(c, "b", n, trouble)
    out.online_sent, out.online_errors = online.sent, online.errors
    deps = [d["metadata"]["name"] for d in api.list("deployments", NS, "apps")]
    assert deps == ["chat"], deps
    out.notes.append(f"faults hit: {sum(f.hits for f in api.emulator.faults)}")
    return tally(out, results(c, "b"), expected)


def pod_unready(c: Cluster, rng: random.Random, n: int = 150) -> Outcome:
    """A pod fails its readiness probe mid-batch (its server keeps running) and recovers
    later; online traffic follows readiness as a Service would."""
    out = Outcome("pod unready mid-batch, then ready", n)
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.3"
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    with OnlineTraffic(c, "chat") as online:

        def flap() -> None:
            wait_progress(c, "b", int(rng.uniform(0.1, 0.3) * n))
            victim = rng.choice(c.kubelet.running("chat"))
            out.notes.append(f"{victim.name} unready at {progress(c, 'b')}/{n}")
            c.kubelet.set_unready(victim.name)
            time.sleep(rng.uniform(3, 8))
            c.kubelet.set_unready(victim.name, False)

        _, expected = run_job(c, "b", n, flap)
    out.online_sent, out.online_errors = online.sent, online.errors
    return tally(out, results(c, "b"), expected)


BAD_LINES: list[tuple[str, bytes]] = [
    ("invalid_json", b'{"custom_id": "bad-json", "method": "POST", '),
    ("missing_custom_id", b'{"method": "POST", "url": "/v1/completions", "body": {}}'),
    ("invalid_url", b'{"custom_id": "wrong-ep", "url": "/v1/embeddings", "body": {}}'),
    ("invalid_method", b'{"custom_id": "get", "method": "GET", "url": "/v1/completions"}'),
    ("invalid_body", b'{"custom_id": "no-body", "method": "POST", "url": "/v1/completions"}'),
    ("invalid_request", b'["not", "an", "object"]'),
]


def bad_batch_file(c: Cluster, rng: random.Random, n: int = 60) -> Outcome:
    """A volume input file mixing good lines with every kind of bad line (bad JSON, no or
    duplicate custom_id, wrong endpoint or method, no body, a 1.5 MiB line, blank lines):
    each bad line fails alone with its code, every good line gets its result."""
    out = Outcome("malformed batch file (volume input)", n)
    c.api.create(serving_slo(), "servingslos")
    ready(c)
    good = [json.dumps(x).encode() for x in batch_lines(n)]
    bad = list(BAD_LINES)
    big = json.dumps({"custom_id": "huge", "method": "POST", "url": "/v1/completions",
                      "body": {"model": "tiny", "prompt": "x" * (3 << 19)}})  # fmt: skip
    bad.append(("line_too_long", big.encode()))
    lines: list[bytes] = [*good]
    for item in bad:  # bad lines at random places among the good ones
        lines.insert(rng.randint(1, len(lines)), item[1])
    lines.insert(rng.randint(0, len(lines)), b"")
    bad.append(("duplicate_custom_id", good[0]))  # a repeat of req-0, somewhere after it
    lines.insert(rng.randint(lines.index(good[0]) + 1, len(lines)), good[0])
    src = c.kubelet.pvc_root / "in" / "mixed.jsonl"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(b"\n".join(lines) + b"\n")
    job = batch_job("mixed", "chat", [], parallelism=4)
    claim(c.api, "in")
    claim(c.api, "out")
    job["spec"]["input"] = {"volume": {"claimName": "in", "path": "mixed.jsonl"}}
    job["spec"]["output"] = {"volume": {"claimName": "out", "path": "mixed.jsonl"}}
    c.api.create(job, "batchjobs")
    st = finished(c, "mixed", 120)
    assert st["phase"] == "Succeeded", st
    assert (st["total"], st["completed"], st["failed"]) == (n + len(bad), n, len(bad)), st
    records = [
        json.loads(x) for x in (c.kubelet.pvc_root / "out" / "mixed.jsonl").read_text().splitlines()
    ]
    codes = sorted(r["error"]["code"] for r in records if r["error"])
    assert codes == sorted(code for code, _ in bad), codes
    assert all(r["error"]["message"].startswith("line ") for r in records if r["error"])
    ok = [r for r in records if not r["error"]]
    out.notes.append(f"{len(bad)} bad lines failed alone: {', '.join(codes)}")
    return tally(out, ok, [f"req-{i}" for i in range(n)])


ATTACK_TEXT = "attacker text"


def anonymous_client(c: Cluster, rng: random.Random, n: int = 300) -> Outcome:
    """Anyone who reaches the Service, beside a running BatchJob, a user's batch and online
    traffic: with no key, a wrong key, or a key of their own, they try to list and read
    offline prompts and results, read another user's batch input, cancel their batch, delete
    the job's requests (one by one and by prefix), inject their own results under the job's
    request ids, and change the budget. Every attempt must fail, the user's batch must
    complete, and the job must end with exactly its own result for every line."""
    import base64

    out = Outcome("anonymous client beside a batch", n)
    c.kubelet.env["FAKE_ENGINE_DELAY_S"] = "0.3"
    keys = {"user": "user-key-" + str(rng.random()), "attacker": "own-key-" + str(rng.random())}
    secret = base64.b64encode(f"{keys['user']}\n{keys['attacker']}\n".encode()).decode()
    c.api.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chat-keys", "namespace": NS},
         "data": {"api-keys": secret}},
        "secrets",
    )  # fmt: skip
    c.api.create(serving_slo(apiKeys={"name": "chat-keys"}), "servingslos")
    ready(c)
    user = {"Authorization": f"Bearer {keys['user']}"}
    victim = endpoints(c, "chat")[0]
    v = f"http://127.0.0.1:{victim}"
    lines = "\n".join(json.dumps(x) for x in batch_lines(20)).encode()
    with httpx.Client(timeout=10, headers=user) as http:
        fid = http.post(f"{v}/v1/files", files={"file": ("in.jsonl", lines)},
                        data={"purpose": "batch"}).raise_for_status().json()["id"]  # fmt: skip
        req = {"input_file_id": fid, "endpoint": "/v1/completions", "completion_window": "24h"}
        bid = http.post(f"{v}/v1/batches", json=req).raise_for_status().json()["id"]
    tried: Counter[str] = Counter()
    broke: Counter[str] = Counter()
    creds = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {keys['attacker']}"}]

    def attack(stop: threading.Event) -> None:
        with httpx.Client(timeout=5) as h:
            while not stop.is_set():
                job = c.obj("batchjobs", "b")
                uid = job.get("metadata", {}).get("uid", "x")  # as if it leaked: worst case
                main = endpoints(c, "chat")
                # the operator's routes, on the admin port (tried on the main one too)
                for port in main + endpoints(c, "chat", "admin"):
                    u = f"http://127.0.0.1:{port}"
                    hdr = rng.choice(creds)
                    k = rng.randrange(n)
                    rid = f"{uid}-{k + 1}"
                    forged = {"model": "tiny", "prompt": ATTACK_TEXT, "max_tokens": 8}
                    attempts = [
                        ("read", "GET", f"{u}/v1/offline/requests?limit=1000", None),
                        ("read", "GET", f"{u}/v1/offline/requests/{rid}", None),
                        ("read", "GET", f"{v}/v1/files/{fid}/content", None),
                        ("read", "GET", f"{v}/v1/batches/{bid}", None),
                        ("cancel", "POST", f"{v}/v1/batches/{bid}/cancel", None),
                        ("delete", "DELETE", f"{u}/v1/offline/requests/{rid}", None),
                        ("delete", "DELETE", f"{u}/v1/offline/requests?prefix={uid}-", None),
                        ("delete", "DELETE", f"{v}/v1/files/{fid}", None),
                        ("inject", "POST", f"{u}/v1/offline/requests",
                         {"id": rid, "url": "/v1/completions", "body": forged}),
                        ("control", "PUT", f"{u}/control/offline", {"mode": "qps", "qps": 0}),
                    ]  # fmt: skip
                    for kind, method, url, body in attempts:
                        tried[kind] += 1
                        try:
                            r = h.request(method, url, json=body, headers=hdr)
                        except httpx.HTTPError:
                            continue
                        if r.status_code < 400:
                            broke[kind] += 1
                    listed = h.get(f"{v}/v1/files", headers=hdr)
                    tried["read"] += 1
                    if listed.status_code < 400 and fid in listed.text:
                        broke["read"] += 1
                stop.wait(0.05)

    stop = threading.Event()
    attacker = threading.Thread(target=attack, args=(stop,), daemon=True)
    with OnlineTraffic(c, "chat", api_key=keys["user"]) as online:
        attacker.start()
        try:
            _, expected = run_job(c, "b", n, lambda: wait_progress(c, "b", n // 3))
        finally:
            stop.set()
            attacker.join(15)
    out.online_sent, out.online_errors = online.sent, online.errors
    records = results(c, "b")
    wrong = [
        r["custom_id"]
        for r in records
        if ((r.get("response") or {}).get("body") or {}).get("echo")
        != f"prompt {r['custom_id'].split('-')[1]}"
    ]
    broke["inject"] += len(wrong)
    with httpx.Client(timeout=10, headers=user) as http:
        deadline = time.monotonic() + 30
        while (b := http.get(f"{v}/v1/batches/{bid}").raise_for_status().json())["status"] not in (
            "completed", "cancelled", "failed", "expired"
        ):  # fmt: skip
            assert time.monotonic() < deadline, b
            time.sleep(0.2)
    if b["status"] != "completed":
        broke["cancel"] += 1
    out.breaches = sum(broke.values())
    out.notes.append(
        "attempts " + ", ".join(f"{k} {tried[k]}" for k in sorted(tried))
        + "; succeeded " + (", ".join(f"{k} {broke[k]}" for k in sorted(broke)) or "none")
        + f"; results not the line's own: {len(wrong)}; user's batch {b['status']}"
    )  # fmt: skip
    return tally(out, records, expected)


def run_scenario(name: str, c: Cluster, seed: int | str) -> Outcome:
    """Run one scenario on a fresh cluster with a seeded random source, timed."""
    t0 = time.monotonic()
    out = SCENARIOS[name](c, random.Random(f"{name}-{seed}"))
    out.seconds = time.monotonic() - t0
    return out


SCENARIOS: dict[str, Callable[[Cluster, random.Random], Outcome]] = {
    "pod_kill9": pod_kill9,
    "operator_restarts": operator_restarts,
    "api_faults": api_faults,
    "pod_unready": pod_unready,
    "bad_batch_file": bad_batch_file,
    "anonymous_client": anonymous_client,
}
