"""The serving pod on the real CPU engine: the official openai client, bad input, per-class
metrics, and a kill -9 mid-batch that still ends with exactly one result per custom_id."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from hygen_pod.dev.pod_process import PodProcess
from tests.helpers.pod_process import TOKEN, tiny_pod

pytestmark = pytest.mark.engine
EP = "/v1/completions"
KEY = "sk-test-key"  # given as vLLM's own --api-key: the pod takes it over
OP = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def pod(tiny_model, tmp_path_factory):
    p = tiny_pod(tiny_model, tmp_path_factory.mktemp("pod") / "state", "--slo", "p99_tbt=500",
                 "--api-key", KEY)  # fmt: skip
    p.start()
    yield p
    assert p.terminate() == 0, p.log_tail()


def _client(pod: PodProcess) -> OpenAI:
    return OpenAI(base_url=pod.url + "/v1", api_key=KEY, max_retries=0)


def test_vllms_routes_need_a_key_and_the_operators_take_its_token(pod: PodProcess) -> None:
    """Our access control in front of vLLM's own app: vLLM's routes (and ours) refuse a
    missing or wrong key; the operator's token opens /v1/offline, which vLLM's own key
    check would have refused; probes and /metrics stay open."""
    body = {"model": "tiny", "prompt": "x", "max_tokens": 2}
    for hdr in ({}, {"Authorization": "Bearer wrong"}, OP):
        assert httpx.post(pod.url + "/v1/completions", json=body, headers=hdr).status_code == 401
        assert httpx.get(pod.url + "/v1/models", headers=hdr).status_code == 401
        assert httpx.get(pod.url + "/tokenize", headers=hdr).status_code == 401
    key = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(pod.url + "/v1/models", headers=key).status_code == 200
    assert httpx.get(pod.url + "/v1/offline/requests", headers=key).status_code == 401
    assert httpx.get(pod.url + "/v1/offline/requests", headers=OP).status_code == 200
    for probe in ("/health", "/ready", "/metrics"):
        assert httpx.get(pod.url + probe).status_code == 200


def _batch_lines(n: int, max_tokens: int, prefix: str = "c") -> list[str]:
    return [
        json.dumps(
            {
                "custom_id": f"{prefix}{i}",
                "method": "POST",
                "url": EP,
                "body": {
                    "model": "tiny",
                    "prompt": f"request {i} " + "word " * (i % 7),
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                },
            }
        )
        for i in range(n)
    ]


def _wait(client: OpenAI, bid: str, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while (b := client.batches.retrieve(bid)).status not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"batch stuck: {b.status} {b.request_counts}"
        time.sleep(0.5)
    return b


def test_openai_client_online_endpoints(pod: PodProcess) -> None:
    c = _client(pod)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    r = c.completions.create(
        model="tiny", prompt="the cat sat", max_tokens=8, temperature=0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert r.usage.completion_tokens == 8
    streamed = c.completions.create(
        model="tiny", prompt="the cat sat", max_tokens=8, temperature=0, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    # Streaming and non-streaming give the same greedy text (the metering wrapper
    # switches non-streaming requests to cumulative outputs internally).
    assert "".join(ch.choices[0].text for ch in streamed) == r.choices[0].text
    chat = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert chat.usage.completion_tokens == 5
    chunks = list(
        c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
            stream=True, extra_body={"ignore_eos": True},
        )
    )  # fmt: skip
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) >= 1


def test_bad_online_requests_get_clear_4xx(pod: PodProcess) -> None:
    c = _client(pod)
    with pytest.raises(openai.NotFoundError, match="nope"):
        c.completions.create(model="nope", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.completions.create(model="tiny", prompt="x " * 3000, max_tokens=2)
    r = httpx.post(pod.url + EP, content=b'{"model": "tiny", "prompt": ', timeout=30,
                   headers={"Content-Type": "application/json",
                            "Authorization": f"Bearer {KEY}"})  # fmt: skip
    assert r.status_code == 400 and "json" in r.text.lower()


def test_batch_on_the_engine_with_bad_lines(pod: PodProcess) -> None:
    c = _client(pod)
    lines = _batch_lines(6, 6, prefix="b")
    lines.insert(3, '{"custom_id": "broken", ')
    big = json.loads(lines[0]) | {"custom_id": "too-long"}
    big["body"] = big["body"] | {"prompt": "x " * 3000}
    lines.append(json.dumps(big))
    typo = json.loads(lines[0]) | {"custom_id": "typo"}
    typo["body"] = typo["body"] | {"max_tokens": "many"}
    lines.append(json.dumps(typo))
    f = c.files.create(file=("in.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch")
    b = _wait(c, c.batches.create(input_file_id=f.id, endpoint=EP, completion_window="24h").id)
    assert b.status == "completed"
    assert (b.request_counts.completed, b.request_counts.failed) == (6, 3)
    out = [json.loads(x) for x in c.files.content(b.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"b{i}" for i in range(6))
    assert all(o["response"]["body"]["usage"]["completion_tokens"] == 6 for o in out)
    err = {
        e["custom_id"]: e
        for e in map(json.loads, c.files.content(b.error_file_id).text.splitlines())
    }
    assert "not valid JSON" in err[None]["error"]["message"]
    assert "maximum context length" in err["too-long"]["error"]["message"]
    assert err["too-long"]["response"]["status_code"] == 400
    assert err["typo"]["response"]["status_code"] == 400
    assert err["typo"]["error"]["message"].startswith("max_tokens:")


def _metric(text: str, name: str, cls: str) -> float:
    m = re.search(rf'^{name}{{class="{cls}"}} ([0-9.e+]+)$', text, re.M)
    assert m, f"{name}{{class={cls}}} missing"
    return float(m.group(1))


def test_metrics_and_control_per_class(pod: PodProcess) -> None:
    c = _client(pod)
    c.completions.create(
        model="tiny", prompt="hello", max_tokens=4, extra_body={"ignore_eos": True}
    )
    r = httpx.post(
        pod.url + "/v1/offline/requests",
        json={"id": "m1", "url": EP, "body": {"model": "tiny", "prompt": "hi", "max_tokens": 4,
                                              "ignore_eos": True}},
        headers=OP,
    )  # fmt: skip
    assert r.status_code in (200, 202)
    deadline = time.monotonic() + 60
    while httpx.get(pod.url + "/v1/offline/requests/m1", headers=OP).json()["state"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with urllib.request.urlopen(pod.url + "/metrics") as resp:
        text = resp.read().decode()
    for cls in ("online", "offline"):
        assert _metric(text, "hygen_ttft_seconds_count", cls) >= 1
        assert _metric(text, "hygen_tbt_seconds_count", cls) >= 3
    assert "hygen_slo_target_seconds" in text and "vllm:" in text  # vLLM's own metrics too
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(pod.url + "/control/metrics").status_code == 401
    live = httpx.get(pod.url + "/control/metrics", headers=auth).json()
    assert live["online"]["tokens"] >= 4 and live["offline"]["tokens"] >= 4
    assert live["slo"][0]["metric"] == "p99_tbt" and live["slo"][0]["met"] is True
    # A control change reaches the scheduler in the engine-core process.
    r = httpx.put(pod.url + "/control/offline", headers=auth, json={"mode": "qps", "qps": 3})
    assert r.status_code == 200
    c.completions.create(model="tiny", prompt="tick", max_tokens=2)  # the engine polls per step
    deadline = time.monotonic() + 30
    while (
        httpx.get(pod.url + "/control/metrics", headers=auth)
        .json()["scheduler"]
        .get("control", {})
        .get("qps")
        != 3
    ):
        assert time.monotonic() < deadline, "scheduler did not pick up the control change"
        c.completions.create(model="tiny", prompt="tick", max_tokens=2)
        time.sleep(1.1)
    httpx.put(pod.url + "/control/offline", headers=auth, json={"mode": "qps", "qps": None})


def test_kill9_mid_batch_then_restart_gives_exactly_one_result_each(tiny_model, tmp_path) -> None:
    n, max_tokens = 24, 48
    state = tmp_path / "state"
    # Offline starts are paced (HyGen* at 4 per second), so the batch takes several seconds on
    # any machine and the crash lands mid-batch; the restarted pod runs unpaced.
    first = tiny_pod(tiny_model, state, "--offline-max-inflight", "4", "--offline-qps", "4").start()
    assert first.proc is not None
    pgid = first.proc.pid
    # Its own process group (kill9 takes it whole), in our session: a session of its own is
    # a scheduling group of its own under autogroup (docs/pod.md, "Measuring on a small
    # machine").
    assert os.getpgid(pgid) == pgid and os.getsid(pgid) == os.getsid(0)
    assert len(_group(pgid)) >= 2, "the engine core runs in a process of its own"
    try:
        c = _client(first)
        f = c.files.create(
            file=("in.jsonl", io.BytesIO("\n".join(_batch_lines(n, max_tokens)).encode())),
            purpose="batch",
        )
        bid = c.batches.create(input_file_id=f.id, endpoint=EP, completion_window="24h").id
        deadline = time.monotonic() + 240
        while (done := c.batches.retrieve(bid).request_counts.completed) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        first.kill9()
    deadline = time.monotonic() + 30
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)  # killed processes are reaped by their parents
    assert not left, f"processes of the crashed pod still alive: {left}"
    assert done < n, "the batch finished before the crash; nothing was tested"
    second = tiny_pod(tiny_model, state).start()
    try:
        c = _client(second)
        b = _wait(c, bid)
        out = [json.loads(x) for x in c.files.content(b.output_file_id).text.splitlines()]
    finally:
        assert second.terminate() == 0
    ids = [o["custom_id"] for o in out]
    assert len(ids) == n and set(ids) == {f"c{i}" for i in range(n)}
    assert all(o["response"]["body"]["usage"]["completion_tokens"] == max_tokens for o in out)
    assert b.error_file_id is None and b.request_counts.completed == n


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _serve(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hygen_pod.cli", "serve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_serve_help_and_bad_options_fail_before_the_engine_starts(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a model folder as far as --model checks
    r = _serve("--help")
    assert r.returncode == 0
    assert "--state-dir" in r.stdout and "ModelConfig" in r.stdout  # ours, vLLM's groups
    r = _serve("--help=max-model-len")  # vLLM's own options, found by name
    assert r.returncode == 0 and "--max-model-len" in r.stdout
    r = _serve("--model", str(tmp_path), "--state-dir", str(tmp_path / "s"), "--slo", "p99_tbt")
    assert r.returncode == 2 and "expected METRIC=MS" in r.stderr
    r = _serve("--model", str(tmp_path), "--state-dir", str(tmp_path / "s"), "--slo", "p50=5")
    assert r.returncode == 2 and "slo_targets_ms.p50" in r.stderr
    r = _serve("--model", str(tmp_path), "--state-dir", str(tmp_path / "s"),
               "--hygen-profile", str(tmp_path / "missing.json"))  # fmt: skip
    assert r.returncode == 2 and "missing.json" in r.stderr
