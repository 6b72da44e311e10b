"""Status that tells the truth: pod trouble read from container statuses, final BatchJob
phases with OpenAI batch semantics, and ConfigMap output split under the server's limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hygen_operator.batch_io import CONFIGMAP_LIMIT, ConfigMapSink, line_key
from hygen_operator.batchjob import final_phase
from hygen_operator.dispatch import Progress
from hygen_operator.kube import CONFIGMAP, Kube
from hygen_operator.servingslo import pod_trouble
from tests.helpers.kube.server import EmulatorServer


def pod(name: str, **status) -> dict:
    return {"metadata": {"name": name}, "status": status}


def test_pod_trouble_names_the_pod_the_reason_and_the_last_exit():
    crash = pod("p-1", containerStatuses=[{
        "name": "serve", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 2, "message": "error: --model x: no such folder"}},
    }])  # fmt: skip
    assert pod_trouble([pod("p-0"), crash]) == (
        "CrashLoopBackOff",
        "pod p-1: container serve CrashLoopBackOff (last exit 2: error: --model x: no such folder)",
    )
    back_off = 'Back-off pulling image "ghcr.io/x:9"'
    pull = pod("p", containerStatuses=[{"name": "serve", "state": {"waiting": {
        "reason": "ImagePullBackOff", "message": back_off}}}])  # fmt: skip
    assert pod_trouble([pull])[1].endswith('(Back-off pulling image "ghcr.io/x:9")')
    init = pod("p", initContainerStatuses=[{"name": "profile", "state": {"waiting": {
        "reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1,
        "reason": "Error"}}}])  # fmt: skip
    assert (
        pod_trouble([init])[1]
        == "pod p: init container profile CrashLoopBackOff (last exit 1: Error)"
    )
    full = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    unsched = pod("p", conditions=[{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": full}])  # fmt: skip
    assert pod_trouble([unsched]) == (
        "Unschedulable",
        "pod p: Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    starting = pod("p", containerStatuses=[{"name": "serve", "state": {"waiting": {
        "reason": "ContainerCreating"}}}])  # fmt: skip
    assert pod_trouble([starting]) is None  # merely starting is not trouble


@pytest.mark.parametrize(
    ("outcome", "counts", "want"),
    [
        ("Succeeded", (3, 3, 0), ("Succeeded", "Succeeded")),
        ("Succeeded", (3, 2, 1), ("Succeeded", "Succeeded")),
        ("Succeeded", (3, 0, 3), ("Failed", "AllRequestsFailed")),
        ("Succeeded", (0, 0, 0), ("Failed", "EmptyInput")),
        ("Expired", (3, 1, 2), ("Failed", "Expired")),
        ("Cancelled", (3, 0, 0), ("Cancelled", "Cancelled")),
    ],
)
def test_final_phase_has_openai_batch_semantics(outcome, counts, want):
    total, completed, failed = counts
    assert final_phase(outcome, Progress(total, completed, failed)) == want


def test_configmap_output_splits_into_parts_the_real_server_accepts(tmp_path: Path):
    """Against the emulator, which refuses ConfigMap data over 1 MiB as the server does;
    a restarted sink finds every part and fills the last one on."""

    async def go(api: EmulatorServer) -> None:
        kube = await Kube.connect(str(api.kubeconfig))
        try:
            sink = ConfigMapSink(kube, "default", "out")
            assert await sink.written() == {}
            row = lambda n: json.dumps({"custom_id": f"c{n}", "response": {"t": "x" * 1500}})  # noqa: E731
            for start in range(0, 2000, 250):  # 2,000 results of ~1.5 KB in flushes of 250
                await sink.write({n: row(n) for n in range(start, start + 250)})
            assert len(sink.parts) >= 3 and sink.parts[:2] == ["out", "out-2"]
            again = ConfigMapSink(kube, "default", "out")  # a restart
            got = await again.written()
            assert sorted(got) == list(range(2000)) and again.parts == sink.parts
            await again.write({5000: row(5000)})
            huge = json.dumps({"custom_id": "h", "response": {"t": "y" * CONFIGMAP_LIMIT}})
            await again.write({5001: huge})
            last = ConfigMapSink(kube, "default", "out")
            assert (await last.written())[5000] is True
            final: dict[str, str] = {}
            for name in last.parts:
                final.update((await kube.get(CONFIGMAP, "default", name))["data"])
            assert json.loads(final[line_key(5000)])["custom_id"] == "c5000"
            err = json.loads(final[line_key(5001)])
            assert err["custom_id"] == "h" and err["error"]["code"] == "result_too_large"
            assert "output.volume" in err["error"]["message"]
            for name in again.parts:
                data = (await kube.get(CONFIGMAP, "default", name))["data"]
                assert sum(len(k) + len(v.encode()) for k, v in data.items()) <= CONFIGMAP_LIMIT
                assert all(k.startswith("line-") for k in data) and line_key(0) != name
        finally:
            await kube.close()

    with EmulatorServer(tmp_path) as api:
        asyncio.run(go(api))
