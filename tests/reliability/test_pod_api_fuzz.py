"""Fuzz the pod's own HTTP API from its OpenAPI document (schemathesis): every response is
documented, in the documented shape, never a 5xx; schema-valid input is accepted and
schema-invalid input rejected; the control and dispatch APIs answer 401 to every call
without the operator's token, the OpenAI routes to every call without an API key; and the
pod still serves afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import unsupported_method

from hygen_pod.contract.api import request_digest
from hygen_pod.server.access import route_kind
from tests.helpers.fake_pod import FakeEngine, FakePodServer

AUTH = {"Authorization": "Bearer secret"}
KEY = {"Authorization": "Bearer key-a"}


def credential(path: str) -> dict[str, str]:
    """What a legitimate caller of ``path`` sends: the operator's token or an API key."""
    return AUTH if route_kind(path) == "operator" else KEY


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePodServer]:
    # a small queue so the fuzzer also meets 429s
    engine = FakeEngine(delay_s=0.001)
    pod_dir = tmp_path_factory.mktemp("pod")
    with FakePodServer(pod_dir, engine, max_queued=20, api_keys=["key-a"]) as p:
        yield p


def fuzz(pod: FakePodServer, check, path_regex: str = ".*", examples: int = 60) -> dict:
    """Run ``check(case)`` on hypothesis-generated cases of every matching operation;
    returns {operation: failure} for those that failed (empty when all passed)."""
    schema = schemathesis.openapi.from_url(f"{pod.url}/openapi.json", headers=KEY)
    schema = schema.include(path_regex=path_regex)
    failures, ran = {}, []
    for result in schema.get_all_operations():
        op = result.ok()
        ran.append(op.label)

        @given(case=op.as_strategy())
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case) -> None:
            check(case)

        try:
            run()
        except Exception as e:  # keep going: report every failing operation at once
            failures[op.label] = e
    assert ran, "no operation matched"
    return failures


def test_every_route_answers_as_documented(pod: FakePodServer) -> None:
    def check(case) -> None:
        body = case.body
        # a legitimate caller's digest is that of its url and body (a wrong one is 400)
        if (
            isinstance(body, dict)
            and isinstance(body.get("digest"), str)
            and isinstance(body.get("body"), dict)
            and isinstance(body.get("url"), str)
        ):
            body["digest"] = request_digest(body["url"], body["body"])
        # Allow-header check excluded: Starlette answers 405 with the Allow of the first
        # route that matched the path, and GET and POST of one path are separate routes.
        case.call_and_validate(headers=credential(case.path), excluded_checks=[unsupported_method])

    failures = fuzz(pod, check)
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())


def test_every_guarded_route_rejects_every_call_without_the_right_credential(
    pod: FakePodServer,
) -> None:
    def check(case) -> None:
        wrong = KEY if credential(case.path) is AUTH else AUTH  # the other kind of secret
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}, wrong):
            r = case.call(headers=headers)
            assert r.status_code == 401, (headers, r.status_code, r.text)
            assert r.json()["error"]["type"] == "authentication_error"

    failures = fuzz(pod, check, "^/(control|v1/)", examples=10)
    assert not failures, failures


def test_the_pod_still_serves_after_the_fuzzing(pod: FakePodServer) -> None:
    http = pod.op
    assert http.get("/ready").status_code == 200
    r = http.post(
        "/v1/offline/requests",
        json={"id": "after-fuzz", "url": "/v1/completions",
              "body": {"model": "tiny", "prompt": "x", "max_tokens": 2}},
    )  # fmt: skip
    assert r.status_code in (200, 202, 429), r.text
    if r.status_code == 429:  # the fuzzer filled the queue: drain it, then try again
        for q in http.get("/v1/batches", headers=KEY).raise_for_status().json()["data"]:
            http.post(f"/v1/batches/{q['id']}/cancel", headers=KEY)
        time.sleep(1)
        r = http.post(
            "/v1/offline/requests",
            json={"id": "after-fuzz", "url": "/v1/completions",
                  "body": {"model": "tiny", "prompt": "x", "max_tokens": 2}},
        )  # fmt: skip
        assert r.status_code in (200, 202), r.text
    deadline = time.monotonic() + 20
    res = http.get("/v1/offline/requests/after-fuzz").raise_for_status().json()
    while res["state"] == "queued":
        assert time.monotonic() < deadline, res
        time.sleep(0.05)
        res = http.get("/v1/offline/requests/after-fuzz").raise_for_status().json()
    assert res["state"] == "done" and res["status_code"] == 200
