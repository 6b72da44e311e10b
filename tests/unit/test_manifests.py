"""The ServingSLO's owned objects: commands, resources, and which spec changes re-profile."""

import pytest

from hygen_operator import dispatcher_job, manifests
from hygen_operator.resources import ServingSLOSpec
from hygen_operator.settings import OperatorSettings

S = OperatorSettings(control_token="t", pod_image="img:1")


def spec(**kw) -> ServingSLOSpec:
    return ServingSLOSpec.model_validate(
        {"model": "meta-llama/Llama-2-7b-hf", "slo": {"p99TbtMs": 80}, **kw}
    )


def test_spec_hash_changes_with_what_a_profile_depends_on_only():
    base = manifests.spec_hash(spec())
    assert manifests.spec_hash(spec(slo={"p99TbtMs": 60})) != base
    assert manifests.spec_hash(spec(interferenceTolerance=0.5)) != base
    assert manifests.spec_hash(spec(engineArgs=["--max-model-len=4096"])) != base
    assert manifests.spec_hash(spec(replicas=5)) == base  # scaling does not re-profile
    assert manifests.spec_hash(spec(offlineMode="qps")) == base  # the profile has both


def test_deployment_runs_profile_then_serve_with_the_same_gpu():
    d = manifests.deployment("llama", spec(resources={"gpus": 2}, replicas=3), S)
    t = d["spec"]["template"]
    h = t["metadata"]["annotations"][manifests.HASH_ANNOTATION]
    init, serve = t["spec"]["initContainers"][0], t["spec"]["containers"][0]
    assert init["image"] == serve["image"] == "img:1"
    assert init["resources"] == serve["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
    i = init["command"]
    assert i[i.index("--spec-hash") + 1] == h and "--oracle" not in i
    assert i[i.index("--targets") + 1] == "p99_tbt" and i[i.index("--tolerance") + 1] == "0.1"
    assert i[i.index("--confidence") + 1] == "0.9"
    strict = manifests.deployment("llama", spec(profiling={"confidence": 0.95}), S)
    assert "0.95" in strict["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert i[i.index("--slices") + 1] == "1"  # the default: one trace slice
    three = manifests.deployment("llama", spec(profiling={"slices": 3}), S)
    cmd = three["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert cmd[cmd.index("--slices") + 1] == "3"
    assert manifests.spec_hash(spec(profiling={"slices": 3})) != manifests.spec_hash(spec())
    c = serve["command"]
    assert c[c.index("--slo") + 1] == "p99_tbt=80"
    assert c[c.index("--hygen-profile") + 1] == i[i.index("--out") + 1]
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["selector"]["matchLabels"] == {manifests.SLO_LABEL: "llama"}
    assert t["metadata"]["labels"][manifests.SLO_LABEL] == "llama"


def test_applied_hash_tracks_everything_written_to_the_deployment():
    a = manifests.deployment("llama", spec(), S)["metadata"]["annotations"]
    same = manifests.deployment("llama", spec(), S)["metadata"]["annotations"]
    scaled = manifests.deployment("llama", spec(replicas=4), S)["metadata"]["annotations"]
    other_image = OperatorSettings(control_token="t", pod_image="img:2")
    moved = manifests.deployment("llama", spec(), other_image)["metadata"]["annotations"]
    key = manifests.APPLIED_ANNOTATION
    assert a == same
    assert (
        scaled[key] != a[key] and scaled[manifests.HASH_ANNOTATION] == a[manifests.HASH_ANNOTATION]
    )
    assert moved[key] != a[key]


def _pod_specs() -> list[dict]:
    from hygen_operator.resources import BatchJobSpec

    job = BatchJobSpec.model_validate({
        "servingSlo": "chat", "endpoint": "/v1/completions",
        "input": {"volume": {"claimName": "in", "path": "a.jsonl"}},
        "output": {"volume": {"claimName": "out", "path": "b.jsonl"}},
    })  # fmt: skip
    return [
        manifests.deployment("chat", spec(), S)["spec"]["template"]["spec"],
        dispatcher_job.dispatcher_job("j", "default", job, S)["spec"]["template"]["spec"],
    ]


def test_every_pod_runs_non_root_on_a_read_only_root_with_writable_paths_as_volumes():
    for pod in _pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        volumes = {v["name"] for v in pod["volumes"]}
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            mounted = {m["mountPath"] for m in c["volumeMounts"]}
            assert {m["name"] for m in c["volumeMounts"]} <= volumes
            # every path the process writes is a mounted volume, not the root filesystem
            for e in c.get("env", []):
                if e["name"] in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT"):
                    assert any(e["value"].startswith(p) for p in mounted), (c["name"], e)
    serve = _pod_specs()[0]["containers"][0]
    assert "/dev/shm" in {m["mountPath"] for m in serve["volumeMounts"]}
    assert any(a.startswith(manifests.STATE_DIR) for a in serve["command"])  # state: a volume


def test_api_keys_secret_is_mounted_and_passed_to_serve_only():
    d = manifests.deployment("llama", spec(apiKeys={"name": "llama-keys"}), S)
    t = d["spec"]["template"]["spec"]
    init, serve = t["initContainers"][0], t["containers"][0]
    c = serve["command"]
    assert c[c.index("--api-key-file") + 1] == f"{manifests.API_KEYS_MOUNT}/keys"
    vol = {v["name"]: v for v in t["volumes"]}["api-keys"]
    assert vol["secret"] == {"secretName": "llama-keys",
                             "items": [{"key": "api-keys", "path": "keys"}]}  # fmt: skip
    assert any(m["name"] == "api-keys" and m["readOnly"] for m in serve["volumeMounts"])
    assert all(m["name"] != "api-keys" for m in init["volumeMounts"])  # profiling needs none
    plain = manifests.deployment("llama", spec(), S)["spec"]["template"]["spec"]
    assert "--api-key-file" not in plain["containers"][0]["command"]
    assert manifests.spec_hash(spec(apiKeys={"name": "k"})) == manifests.spec_hash(spec())


def test_online_prefill_caps_reach_the_profiler_and_change_the_profile_hash():
    def init_cmd(s: ServingSLOSpec) -> list[str]:
        return manifests.deployment("llama", s, S)["spec"]["template"]["spec"]["initContainers"][0][
            "command"
        ]

    assert "--online-prefill-caps" not in init_cmd(spec())  # vLLM's chunking only
    capped = spec(profiling={"onlinePrefillCaps": [512, 256]})
    i = init_cmd(capped)
    assert i[i.index("--online-prefill-caps") + 1 : i.index("--online-prefill-caps") + 3] == [
        "512",
        "256",
    ]
    assert manifests.spec_hash(capped) != manifests.spec_hash(spec())  # a new search
    with pytest.raises(ValueError, match=r"onlinePrefillCaps|online_prefill_caps"):
        spec(profiling={"onlinePrefillCaps": [0]})


def test_the_tolerance_reference_reaches_the_profiler_and_changes_the_profile_hash():
    def init_cmd(s: ServingSLOSpec) -> list[str]:
        return manifests.deployment("llama", s, S)["spec"]["template"]["spec"]["initContainers"][0][
            "command"
        ]

    plain = init_cmd(spec())
    assert plain[plain.index("--reference") + 1] == "vllm-chunking"
    chosen = spec(profiling={"toleranceReference": "chosenChunking"})
    i = init_cmd(chosen)
    assert i[i.index("--reference") + 1] == "chosen-chunking"
    assert manifests.spec_hash(chosen) != manifests.spec_hash(spec())  # a new search
    with pytest.raises(ValueError, match=r"toleranceReference|tolerance_reference"):
        spec(profiling={"toleranceReference": "stock"})
