"""The pod's batch, offline, control and probe routes over HTTP, with a fake engine.

The official `openai` client drives files and batches; a restart of the pod on
the same state directory resumes a batch with exactly one result per custom_id.
"""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from openai import OpenAI

from tests.helpers.fake_pod import FakeEngine, FakePodServer

EP = "/v1/completions"
AUTH = {"Authorization": "Bearer secret"}


def _lines(n: int) -> list[str]:
    return [
        json.dumps(
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": EP,
                "body": {"model": "tiny", "prompt": f"p{i}", "max_tokens": 4},
            }
        )
        for i in range(n)
    ]


def _wait_batch(client: OpenAI, bid: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        b = client.batches.retrieve(bid)
        if b.status in ("completed", "failed", "cancelled", "expired"):
            return b
        assert time.monotonic() < deadline, f"batch stuck in {b.status}: {b.request_counts}"
        time.sleep(0.05)


def _jsonl(client: OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def _submit(client: OpenAI, n: int, window: str = "24h") -> str:
    """Upload n good lines and start a batch; its id."""
    data = "\n".join(_lines(n)).encode()
    f = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=EP, completion_window=window).id


def _wait_until(cond, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_openai_client_batch_with_bad_lines(tmp_path) -> None:
    eng = FakeEngine()
    with FakePodServer(tmp_path, eng) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        lines = _lines(6)
        lines[2] = "{broken"
        lines.append(json.dumps({"custom_id": "m", "url": EP, "body": {"model": "nope"}}))
        f = client.files.create(
            file=("in.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch"
        )
        assert client.files.retrieve(f.id).bytes == len("\n".join(lines).encode())
        b = client.batches.create(input_file_id=f.id, endpoint=EP, completion_window="24h")
        b = _wait_batch(client, b.id)
        assert b.status == "completed"
        assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (
            7,
            5,
            2,
        )
        out = _jsonl(client, b.output_file_id)
        err = _jsonl(client, b.error_file_id)
        assert [o["custom_id"] for o in out] == ["c0", "c1", "c3", "c4", "c5"]
        assert out[0]["response"]["body"]["echo"] == "p0"
        # Every engine call carried the offline marker.
        assert all(c["vllm_xargs"] == {"hygen_class": "offline"} for c in eng.calls)
        assert {e["custom_id"] for e in err} == {None, "m"}
        by_id = {e["custom_id"]: e for e in err}
        assert "line 3" in by_id[None]["error"]["message"]
        assert by_id["m"]["response"]["status_code"] == 404
        assert "nope" in by_id["m"]["error"]["message"]
        assert b.id in [x.id for x in client.batches.list()]


def test_bad_requests_get_clear_4xx(tmp_path) -> None:
    with FakePodServer(tmp_path, FakeEngine()) as srv, httpx.Client(base_url=srv.url) as h:
        r = h.post("/v1/batches", content=b"{not json")
        assert r.status_code == 400 and "json" in r.json()["error"]["message"].lower()
        r = h.post("/v1/batches", json={"input_file_id": "file_x", "endpoint": "/v1/embed"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "endpoint"
        r = h.post("/v1/batches", json={"input_file_id": "file_x", "endpoint": EP})
        assert r.status_code == 404 and "file_x" in r.json()["error"]["message"]
        r = h.post(
            "/v1/batches",
            json={"input_file_id": "f", "endpoint": EP, "completion_window": "soon"},
        )
        assert r.status_code == 400 and "completion_window" in r.json()["error"]["message"]
        r = h.post("/v1/files", files={"file": ("a", b"x")}, data={"purpose": "tune"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
        r = h.get("/v1/batches/batch_nope")
        assert r.status_code == 404


def test_control_api_needs_the_token(tmp_path) -> None:
    with FakePodServer(tmp_path, FakeEngine(), slo_targets_ms={"p99_tbt": 50.0}) as srv:
        h = srv.http
        for method, path in (
            ("GET", "/control"),
            ("PUT", "/control/offline"),
            ("GET", "/control/metrics"),
            ("PUT", "/control/slo"),
        ):
            for hdr in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
                r = h.request(method, path, headers=hdr, json={})
                assert r.status_code == 401, (method, path, hdr)
        r = h.put("/control/offline", headers=AUTH, json={"mode": "qps", "qps": 2.5})
        assert r.status_code == 200 and r.json()["control"]["qps"] == 2.5
        ctl = json.loads((tmp_path / "control.json").read_text())
        assert ctl == {
            "mode": "qps",
            "budget_ms": 0.0,
            "qps": 2.5,
            "online_prefill_cap": None,
            "yield_to_prompts": False,
        }  # what the scheduler reads
        r = h.put("/control/offline", headers=AUTH,
                  json={"mode": "qps", "qps": 2.5, "online_prefill_cap": 256})  # fmt: skip
        assert r.status_code == 200
        assert json.loads((tmp_path / "control.json").read_text())["online_prefill_cap"] == 256
        for bad in (0, True, "256", 1.5):
            r = h.put("/control/offline", headers=AUTH,
                      json={"mode": "qps", "qps": 2.5, "online_prefill_cap": bad})  # fmt: skip
            assert r.status_code in (400, 422) and "online_prefill_cap" in r.text, bad
        r = h.put("/control/offline", headers=AUTH,
                  json={"mode": "qps", "qps": 2.5, "online_prefill_cap": 128.0})  # fmt: skip
        assert r.status_code == 200  # JSON Schema's integer includes 128.0 (schemathesis)
        assert json.loads((tmp_path / "control.json").read_text())["online_prefill_cap"] == 128
        r = h.put("/control/offline", headers=AUTH, json={"mode": "budget", "budget_ms": 20})
        assert r.status_code == 409 and "predictor" in r.json()["error"]["message"]
        r = h.put("/control/offline", headers=AUTH, json={"mode": "fast"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "mode"
        for bad in ("yes", 1, None):  # strict: only JSON true/false
            r = h.put("/control/offline", headers=AUTH,
                      json={"mode": "qps", "qps": 1, "yield_to_prompts": bad})  # fmt: skip
            assert r.status_code == 400 and r.json()["error"]["param"] == "yield_to_prompts", bad
        r = h.put("/control/slo", headers=AUTH, json={"targets_ms": {"p99_tbt": -1}})
        assert r.status_code == 400 and "p99_tbt" in r.json()["error"]["message"]
        r = h.put("/control/slo", headers=AUTH, json={"targets_ms": {"mean_ttft": 300}})
        assert r.json()["slo_targets_ms"] == {"mean_ttft": 300}
        live = h.get("/control/metrics", headers=AUTH).json()
        assert [s["metric"] for s in live["slo"]] == ["mean_ttft"]
        assert h.get("/control/profile", headers=AUTH).status_code == 404


def test_single_offline_requests_backpressure_and_idempotency(tmp_path) -> None:
    eng = FakeEngine(hold_after=0)  # nothing finishes: the queue fills up
    with FakePodServer(tmp_path, eng, max_queued=3, max_inflight=1) as srv:
        h = srv.op
        body = {"model": "tiny", "prompt": "x"}
        codes = [
            h.post(
                "/v1/offline/requests", json={"id": f"j/{i}", "url": EP, "body": body}
            ).status_code
            for i in range(3)
        ]
        assert codes == [202, 202, 202]
        r = h.post("/v1/offline/requests", json={"id": "j/3", "url": EP, "body": body})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        # Re-sending a stored id is not new work: no 429, no duplicate.
        r = h.post("/v1/offline/requests", json={"id": "j/0", "url": EP, "body": body})
        assert r.status_code == 200 and r.json()["state"] == "queued"
        r = h.post(
            "/v1/offline/requests", json={"id": "j/0", "url": EP, "body": {"prompt": "other"}}
        )
        assert r.status_code == 409
        r = h.post("/v1/offline/requests", json={"id": "bad id!", "url": EP, "body": {}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "id"
        assert h.delete("/v1/offline/requests/j/0").status_code == 200
        assert h.get("/v1/offline/requests/j/0").status_code == 404
        r = h.post("/v1/offline/requests", json={"id": "j/3", "url": EP, "body": body})
        assert r.status_code == 202


def test_bulk_submit_gives_each_request_its_own_status_and_bulk_delete_forgets_many(
    tmp_path,
) -> None:
    from hygen_pod.contract.api import request_digest

    eng = FakeEngine(hold_after=0)  # what starts never finishes: running work to cancel
    with FakePodServer(tmp_path, eng, max_queued=4, max_inflight=1) as srv:
        h = srv.op
        body = {"model": "tiny", "prompt": "x"}
        assert h.post(
            "/v1/offline/requests", json={"id": "k-0", "url": EP, "body": body}
        ).is_success
        reqs = [
            {"id": "k-0", "url": EP, "body": body},  # stored already: 200
            {"id": "k-1", "url": EP, "body": body, "digest": request_digest(EP, body)},
            {"id": "k-2", "url": EP, "body": body, "digest": "0" * 64},  # not its digest
            {"id": "k-0", "url": EP, "body": {"prompt": "other"}},  # another body: 409
            {"id": "k-3", "url": EP, "body": body},
            {"id": "k-4", "url": EP, "body": body},
            {"id": "k-5", "url": EP, "body": body},  # past max_queued: 429
        ]
        r = h.post("/v1/offline/requests/bulk-submit", json={"requests": reqs})
        assert r.status_code == 200, r.text
        out = r.json()
        assert [o["status"] for o in out["outcomes"]] == [200, 202, 400, 409, 202, 202, 429]
        assert out["retry_after_s"] >= 1 and out["outcomes"][1]["result"]["state"] == "queued"
        assert h.get("/v1/offline/requests/k-2").status_code == 404  # nothing unverifiable
        _wait_until(lambda: len(srv.pod.runner.inflight) == 1)
        ids = ["k-0", "k-1", "k-3", "nope-1"]
        r = h.post("/v1/offline/requests/bulk-delete", json={"ids": ids})
        assert r.status_code == 200 and sorted(r.json()["deleted"]) == ["k-0", "k-1", "k-3"]
        assert r.json()["missing"] == ["nope-1"]
        assert not set(ids) & set(srv.pod.runner.inflight), "the running one was cancelled"
        left = h.get("/v1/offline/requests", params={"prefix": "k-"}).json()["data"]
        assert [x["id"] for x in left] == ["k-4"]
        for bad in ({"requests": []}, {"requests": reqs * 200}, {"ids": ["a b"]}, {"ids": []}):
            route = "bulk-submit" if "requests" in bad else "bulk-delete"
            assert h.post(f"/v1/offline/requests/{route}", json=bad).status_code == 400
        anon = httpx.post(f"{srv.op.base_url}/v1/offline/requests/bulk-delete", json={"ids": ids})
        assert anon.status_code == 401


def test_a_job_prefix_lists_and_cancels_all_its_requests_at_once(tmp_path) -> None:
    eng = FakeEngine(hold_after=0)  # what starts never finishes: running work to cancel
    with FakePodServer(tmp_path, eng, max_inflight=2) as srv:
        h = srv.op
        for rid in ("u1-1", "u1-2", "u1-3", "u2-1"):
            h.post("/v1/offline/requests", json={"id": rid, "url": EP, "body": {"prompt": rid}})
        _wait_until(lambda: len(srv.pod.runner.inflight) == 2)
        r = h.get("/v1/offline/requests", params={"prefix": "u1-", "limit": 2})
        assert r.status_code == 200 and r.json()["has_more"]
        assert [x["id"] for x in r.json()["data"]] == ["u1-1", "u1-2"]
        r = h.get("/v1/offline/requests", params={"prefix": "u1-", "after": "u1-2"})
        assert [x["id"] for x in r.json()["data"]] == ["u1-3"] and not r.json()["has_more"]
        r = h.delete("/v1/offline/requests", params={"prefix": "u1-"})
        assert r.status_code == 200 and r.json()["deleted"] == 3
        assert all(not rid.startswith("u1-") for rid in srv.pod.runner.inflight)
        left = h.get("/v1/offline/requests", params={"prefix": "u"}).json()["data"]
        assert [x["id"] for x in left] == ["u2-1"]
        assert h.delete("/v1/offline/requests").status_code == 400  # no prefix: refused
        r = h.get("/v1/offline/requests", params={"prefix": "a b"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prefix"


def test_single_offline_request_result(tmp_path) -> None:
    with FakePodServer(tmp_path, FakeEngine()) as srv:
        h = srv.op
        h.post(
            "/v1/offline/requests",
            json={"id": "r1", "url": EP, "body": {"model": "tiny", "prompt": "hi"}},
        )
        deadline = time.monotonic() + 10
        while (r := h.get("/v1/offline/requests/r1").json())["state"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert r["state"] == "done" and r["response"]["echo"] == "hi"


def test_restart_mid_batch_gives_exactly_one_result_per_custom_id(tmp_path) -> None:
    n = 20
    first = FakeEngine(hold_after=8)
    with FakePodServer(tmp_path, first, max_inflight=4) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        bid = _submit(client, n)
        _wait_until(lambda: client.batches.retrieve(bid).request_counts.completed >= 8)
    # The first pod is gone with requests in flight; a new one resumes from disk.
    second = FakeEngine()
    with FakePodServer(tmp_path, second) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        b = _wait_batch(client, bid)
        out = _jsonl(client, b.output_file_id)
    ids = [o["custom_id"] for o in out]
    assert sorted(ids) == sorted(f"c{i}" for i in range(n)) and len(ids) == len(set(ids))
    assert b.error_file_id is None
    # Only the unfinished requests ran again.
    assert len(second.calls) == n - 8


def test_cancel_batch_stops_its_work(tmp_path) -> None:
    eng = FakeEngine(hold_after=2)
    with FakePodServer(tmp_path, eng, max_inflight=2) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        bid = _submit(client, 10)
        _wait_until(lambda: client.batches.retrieve(bid).request_counts.completed >= 2)
        assert client.batches.cancel(bid).status in ("cancelling", "cancelled")
        b = _wait_batch(client, bid)
        assert b.status == "cancelled"
        assert (b.request_counts.completed, b.request_counts.failed) == (2, 8)
        err = _jsonl(client, b.error_file_id)
        assert {e["error"]["code"] for e in err} == {"batch_cancelled"}
        assert srv.pod.runner.inflight == {}
        calls = len(eng.calls)
        time.sleep(0.3)
        assert len(eng.calls) == calls  # nothing more started


@pytest.mark.parametrize("draining", [False, True])
def test_ready_and_draining(tmp_path, draining: bool) -> None:
    with FakePodServer(tmp_path, FakeEngine()) as srv:
        srv.pod.draining = draining
        h = srv.op
        assert h.get("/ready").status_code == (503 if draining else 200)
        r = h.post("/v1/offline/requests", json={"id": "a", "url": EP, "body": {}})
        assert r.status_code == (503 if draining else 202)


def test_drain_stops_new_work_and_requeues_what_was_running(tmp_path) -> None:
    eng = FakeEngine(hold_after=1)  # the first finishes, the next ones hang
    with FakePodServer(tmp_path, eng, max_inflight=2) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        bid = _submit(client, 5)
        _wait_until(lambda: len(srv.pod.runner.inflight) >= 2 and len(eng.calls) >= 3)
        srv.pod.draining = True
        assert srv.call(srv.pod.runner.drain(0.2)) == 2  # the two hanging requests aborted
        calls = len(eng.calls)
        time.sleep(0.3)
        assert len(eng.calls) == calls  # nothing new starts while draining
        b = client.batches.retrieve(bid)
        assert b.status == "in_progress"
        assert (b.request_counts.completed, b.request_counts.failed) == (1, 0)
        assert srv.pod.store.depth()["queued"] == 4  # still there for the next start


def test_batch_past_its_window_expires_keeping_finished_results(tmp_path) -> None:
    eng = FakeEngine(hold_after=3)
    with FakePodServer(tmp_path, eng, max_inflight=2) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        bid = _submit(client, 8, "1h")
        _wait_until(lambda: client.batches.retrieve(bid).request_counts.completed >= 3)
        srv.pod.runner.clock = lambda: time.time() + 3601
        b = _wait_batch(client, bid)
        assert b.status == "expired" and b.expired_at is not None
        assert (b.request_counts.completed, b.request_counts.failed) == (3, 5)
        assert len(_jsonl(client, b.output_file_id)) == 3
        assert {e["error"]["code"] for e in _jsonl(client, b.error_file_id)} == {"batch_expired"}
        assert srv.pod.runner.inflight == {}


def test_prometheus_scrape_sees_current_queue_depth(tmp_path) -> None:
    from prometheus_client import generate_latest

    eng = FakeEngine(hold_after=0)
    with FakePodServer(tmp_path, eng, max_inflight=1) as srv:
        for i in range(3):
            srv.op.post("/v1/offline/requests", json={"id": f"q{i}", "url": EP, "body": {}})

        def scrape() -> str:
            return generate_latest(srv.registry).decode()

        # No /control/metrics call: the runner's housekeeping keeps the gauges current.
        _wait_until(lambda: 'hygen_offline_requests{state="queued"} 2.0' in scrape())
        assert 'hygen_offline_requests{state="inflight"} 1.0' in scrape()
        assert "hygen_offline_qps_limit 0.0" in scrape()  # default: budget mode, budget 0


def _concrete(path: str) -> str:
    """A route's path with every parameter filled in."""
    import re

    return re.sub(r"\{[^}]+\}", "x1", path)


def test_every_route_but_probes_and_metrics_needs_a_credential(tmp_path) -> None:
    """Enumerated from the app itself, so a route added later cannot slip by unguarded."""
    from fastapi.routing import APIRoute

    from hygen_pod.server.access import OPEN_PATHS

    with FakePodServer(tmp_path, FakeEngine(), api_keys=["key-a"]) as srv:
        h = srv.http
        checked = 0
        for route in srv.app.routes:
            if not isinstance(route, APIRoute) or route.path in OPEN_PATHS:
                continue
            path = _concrete(route.path)
            for method in route.methods:
                for hdr in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-a"}):
                    r = h.request(method, path, headers=hdr)
                    assert r.status_code == 401, (method, path, hdr, r.text)
                    assert r.json()["error"]["type"] == "authentication_error"
                checked += 1
        assert checked >= 15
        # An API key does not open the operator's routes, nor the token the clients'.
        key, op = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer secret"}
        assert h.get("/v1/offline/requests", headers=key).status_code == 401
        assert h.get("/control", headers=key).status_code == 401
        assert h.get("/v1/files", headers=op).status_code == 401
        # Spellings of an operator path are still the operator's (or no route at all).
        for path in ("//control", "/CONTROL", "/v1//offline/requests", "/Control/metrics"):
            assert h.get(path, headers=key).status_code in (401, 404), path
        assert h.get("/ready").status_code == 200  # probes stay open (/metrics is vLLM's)
        assert h.get("/v1/files", headers=key).status_code == 200


def test_files_and_batches_are_invisible_to_another_key(tmp_path) -> None:
    from openai import NotFoundError

    with FakePodServer(tmp_path, FakeEngine(), api_keys=["key-a", "key-b"]) as srv:
        a = OpenAI(base_url=srv.url + "/v1", api_key="key-a")
        b = OpenAI(base_url=srv.url + "/v1", api_key="key-b")
        bid = _submit(a, 3)  # the official client with an API key, unchanged
        done = _wait_batch(a, bid)
        assert done.status == "completed" and len(_jsonl(a, done.output_file_id)) == 3
        fid = done.input_file_id
        for call in (
            lambda: b.batches.retrieve(bid),
            lambda: b.batches.cancel(bid),
            lambda: b.files.retrieve(fid),
            lambda: b.files.content(fid),
            lambda: b.files.content(done.output_file_id),
            lambda: b.files.delete(fid),
            lambda: b.batches.create(input_file_id=fid, endpoint=EP, completion_window="24h"),
        ):
            with pytest.raises(NotFoundError):
                call()
        assert [x.id for x in b.batches.list()] == [] and list(b.files.list()) == []
        assert bid in [x.id for x in a.batches.list()]
        assert fid in [x.id for x in a.files.list()]


def test_with_an_admin_port_the_operators_routes_live_there_alone(tmp_path) -> None:
    """What lets a NetworkPolicy fence them off: control and dispatch answer only on the
    admin port, everything else only on the main port; probes on both."""
    with FakePodServer(tmp_path, FakeEngine(), admin=True) as srv:
        main, admin, op = srv.http, srv.op, {"Authorization": "Bearer secret"}
        job = {"id": "j-1", "url": EP, "body": {"model": "tiny", "prompt": "p"}}
        assert admin.post("/v1/offline/requests", json=job).status_code == 202
        assert admin.get("/control").status_code == 200
        r = main.get("/control", headers=op)
        assert r.status_code == 404 and "admin port" in r.json()["error"]["message"]
        assert main.post("/v1/offline/requests", json=job, headers=op).status_code == 404
        assert main.get("/v1/offline/requests/j-1", headers=op).status_code == 404
        assert main.get("/v1/files").status_code == 200  # no keys: open, on the main port
        assert admin.get("/v1/files").status_code == 404
        assert (
            admin.get("/v1/offline/requests/j-1", headers={"Authorization": ""}).status_code == 401
        )
        assert main.get("/ready").status_code == admin.get("/ready").status_code == 200


def test_a_generated_control_token_is_private_from_birth_and_its_place_is_logged(
    tmp_path, caplog, monkeypatch
) -> None:
    import logging
    import os

    from prometheus_client import CollectorRegistry

    from hygen_pod.server.pod_app import Pod, PodSettings

    modes: list[int] = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **kw):  # the mode the file is created with
        if str(path).endswith("control.token"):
            modes.append(mode)
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(os, "open", spy)
    state = tmp_path / "state"
    with caplog.at_level(logging.WARNING, logger="hygen.pod"):
        pod = Pod(PodSettings(state_dir=state), FakeEngine(), registry=CollectorRegistry())
    token_file = state / "control.token"
    assert modes == [0o600] and token_file.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    assert f"generated one in {token_file}" in caplog.text and pod.token not in caplog.text
    again = Pod(PodSettings(state_dir=state), FakeEngine(), registry=CollectorRegistry())
    assert again.token == pod.token  # a restart keeps it
    pod.store.close()
    again.store.close()
