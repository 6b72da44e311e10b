"""The API emulator against what the Kubernetes documentation says the real server does.

Each enforced behaviour is tried over HTTP, as a client meets it: size limits (ConfigMap
data 1 MiB -> 422, request body 3 MiB -> 413, stored object 1.5 MiB -> etcd's 500), CRD
schema validation (422 naming every field), pruning of unknown fields and defaulting,
resourceVersion conflicts (409), owner-reference garbage collection, field selectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.kube.cluster import apply_crds
from tests.helpers.kube.server import EmulatorServer

CM = "/api/v1/namespaces/default/configmaps"
BJ = "/apis/hygen.io/v1alpha1/namespaces/default/batchjobs"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorServer, httpx.Client]]:
    with EmulatorServer(Path(tmp_path_factory.mktemp("emu"))) as srv:
        apply_crds(srv)
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            yield srv, http


def cm(name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def job(name: str, **spec) -> dict:
    base = {"servingSlo": "s", "endpoint": "/v1/completions", "input": {"inline": [{}]},
            "output": {"configMap": {"name": "o"}}}  # fmt: skip
    return {"apiVersion": "hygen.io/v1alpha1", "kind": "BatchJob", "metadata": {"name": name},
            "spec": {**base, **spec}}  # fmt: skip


def test_configmap_data_over_one_mib_is_invalid(api) -> None:
    _, http = api
    key = "k"
    at_limit = "x" * (MIB - len(key))
    assert http.post(CM, json=cm("full", {key: at_limit})).status_code == 201
    r = http.post(CM, json=cm("over", {key: at_limit + "x"}))
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    assert "Too long: must have at most 1048576 bytes" in r.json()["message"]
    # a patch that grows it past the limit is refused the same way, and changes nothing
    r = http.patch(f"{CM}/full", json={"data": {"k2": "y"}},
                   headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
    assert r.status_code == 422
    assert http.get(f"{CM}/full").json()["data"] == {key: at_limit}


def test_request_bodies_over_3_mib_get_413_and_stored_objects_over_1_5_mib_500(api) -> None:
    _, http = api
    r = http.post(CM, content=b"{" + b" " * (3 * MIB) + b"}",
                  headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and "limit is 3145728" in r.json()["message"]
    big = job("big", input={"inline": [{"p": "x" * (800 * 1024)}, {"p": "y" * (800 * 1024)}]})
    r = http.post(BJ, json=big)
    assert r.status_code == 500 and r.json()["message"] == "etcdserver: request is too large"
    assert http.get(f"{BJ}/big").status_code == 404


def test_custom_resources_are_validated_against_the_crd_naming_every_field(api) -> None:
    _, http = api
    r = http.post(BJ, json=job("bad", parallelism=0, endpoint="/v1/embeddings"))
    assert r.status_code == 422 and r.json()["reason"] == "Invalid"
    msg = r.json()["message"]
    assert msg.startswith('BatchJob.hygen.io "bad" is invalid: [')
    assert "spec.parallelism: Invalid value: 0: spec.parallelism in body should be greater " \
           "than or equal to 1" in msg  # fmt: skip
    assert 'spec.endpoint: Unsupported value: "/v1/embeddings"' in msg
    assert {c["field"] for c in r.json()["details"]["causes"]} == {
        "spec.parallelism",
        "spec.endpoint",
    }
    r = http.post(BJ, json=job("noslo", servingSlo=None))
    assert r.status_code == 422 and "spec.servingSlo" in r.json()["message"]
    assert http.get(f"{BJ}/bad").status_code == 404


def test_unknown_fields_are_pruned_and_defaults_applied(api) -> None:
    _, http = api
    body = job("pruned", surprise={"a": 1})
    body["spec"]["output"]["configMap"]["extra"] = "dropped"
    r = http.post(BJ, json=body)
    assert r.status_code == 201, r.text
    spec = http.get(f"{BJ}/pruned").json()["spec"]
    assert "surprise" not in spec and "extra" not in spec["output"]["configMap"]
    assert spec["parallelism"] == 64 and spec["cancel"] is False  # the CRD's defaults
    assert spec["input"]["inline"] == [{}]  # inline lines keep their unknown fields


def test_a_write_with_a_stale_resource_version_conflicts(api) -> None:
    _, http = api
    made = http.post(CM, json=cm("rv", {"a": "1"})).json()
    rv = made["metadata"]["resourceVersion"]
    ok = http.put(f"{CM}/rv", json={**made, "data": {"a": "2"}})
    assert ok.status_code == 200 and ok.json()["metadata"]["resourceVersion"] != rv
    stale = http.put(f"{CM}/rv", json={**made, "data": {"a": "3"}})
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
    r = http.patch(f"{CM}/rv", json={"metadata": {"resourceVersion": rv}, "data": {"a": "4"}},
                   headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
    assert r.status_code == 409
    assert http.get(f"{CM}/rv").json()["data"] == {"a": "2"}


def test_deleting_an_owner_collects_its_dependents(api) -> None:
    _, http = api
    owner = http.post(CM, json=cm("owner", {})).json()
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner["metadata"]["uid"]}  # fmt: skip
    dep = cm("dependent", {})
    dep["metadata"]["ownerReferences"] = [ref]
    assert http.post(CM, json=dep).status_code == 201
    assert http.delete(f"{CM}/owner").status_code == 200
    assert http.get(f"{CM}/dependent").status_code == 404


def test_events_can_be_selected_by_the_object_they_are_about(api) -> None:
    _, http = api
    ev = "/api/v1/namespaces/default/events"
    for i, name in enumerate(("a", "b", "a")):
        http.post(ev, json={"apiVersion": "v1", "kind": "Event",
                            "metadata": {"name": f"e{i}"}, "reason": "R",
                            "involvedObject": {"kind": "BatchJob", "name": name}})  # fmt: skip
    r = http.get(ev, params={"fieldSelector": "involvedObject.name=a,involvedObject.kind=BatchJob"})
    assert sorted(x["metadata"]["name"] for x in r.json()["items"]) == ["e0", "e2"]
    r = http.get(ev, params={"fieldSelector": "involvedObject.name!=a"})
    assert [x["metadata"]["name"] for x in r.json()["items"]] == ["e1"]


def test_status_writes_validate_the_status_and_unchanged_fields_ratchet(api) -> None:
    """The status subresource validates the status stanza only; an update keeps passing a
    field that is invalid but unchanged (validation ratcheting, Kubernetes >= 1.30), so an
    object stored under a looser schema can still be given finalizers and status."""
    srv, http = api
    legacy = job("legacy", parallelism=0)
    legacy["metadata"]["namespace"] = "default"
    srv.create(legacy, "batchjobs", admit=False)  # stored under an older, looser schema
    merge = {"Content-Type": "application/merge-patch+json"}
    r = http.patch(f"{BJ}/legacy/status", json={"status": {"phase": "Failed"}}, headers=merge)
    assert r.status_code == 200, r.text
    r = http.patch(f"{BJ}/legacy/status", json={"status": {"phase": "Exploded"}}, headers=merge)
    assert r.status_code == 422 and "status.phase: Unsupported value" in r.json()["message"]
    r = http.patch(f"{BJ}/legacy", json={"metadata": {"finalizers": ["x/y"]}}, headers=merge)
    assert r.status_code == 200, r.text  # spec.parallelism unchanged: it ratchets
    r = http.patch(f"{BJ}/legacy", json={"spec": {"parallelism": -5}}, headers=merge)
    assert r.status_code == 422 and "spec.parallelism" in r.json()["message"]
