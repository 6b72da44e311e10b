"""The profiler on the real CPU engine, and the scheduler loading its profile."""

from __future__ import annotations

import pytest

from hygen_pod.contract.settings import SchedulerSettings
from hygen_pod.profiling.profiler import ProfilerSettings, profile
from hygen_pod.profiling.traces import default_data_dir

pytestmark = pytest.mark.engine


def test_engine_profile_loads_into_the_scheduler(fresh, tiny_model, tmp_path) -> None:
    if not (default_data_dir() / "azure-llm-trace-2023").is_dir():
        pytest.skip("shared data folder not present")
    from hygen_pod.profiling.traces import arxiv_summarization, azure_conversation
    from hygen_pod.profiling.workload import cpu_offline, cpu_online
    from hygen_pod.vllm_adapter.engine import Engine, EngineRunner
    from hygen_pod.vllm_adapter.scheduler import _load_policy

    azure, arxiv = azure_conversation(), arxiv_summarization()
    eng = Engine.from_llm(fresh.llm)
    v = eng.vocab_size
    runner = EngineRunner(
        eng,
        cpu_online(azure, tag="p", start=500, count=10, qps=5.0, vocab=v, seed=1),
        cpu_offline(arxiv, tag="p", count=10, vocab=v, seed=2),
        cpu_offline(arxiv, tag="c", count=24, vocab=v, seed=3),
        model=str(tiny_model),
    )
    saved_predictor = fresh.scheduler.predictor
    try:
        doc = profile(runner, ProfilerSettings(["p99_tbt"], 0.5, iters=2))
    finally:
        fresh.scheduler.predictor = saved_predictor
    assert doc.hardware == "cpu" and doc.predictor.fitted_on >= 20
    assert doc.probes["budget_ms"] and doc.probes["qps"]
    if doc.budget_ms > 0:
        assert doc.offline_tps_budget > 0
    path = tmp_path / "profile.json"
    doc.save(path)
    predictor, control = _load_policy(SchedulerSettings(profile_path=str(path)))
    assert predictor is not None and predictor.features == tuple(doc.predictor.features)
    assert control == doc.control()  # the mode that did more offline work, with its chunking
    # a profile whose QPS did more offline work starts the scheduler in QPS mode
    qps_better = doc.model_copy(
        update={"offline_tps_qps": doc.offline_tps_budget + 1.0, "qps_online_prefill_cap": 256}
    )
    qps_better.save(path)
    _, control = _load_policy(SchedulerSettings(profile_path=str(path)))
    assert control.mode == "qps" and control.qps == doc.qps and control.online_prefill_cap == 256
    doc.save(path)
    with pytest.raises(ValueError, match="not both"):
        _load_policy(SchedulerSettings(profile_path=str(path), predictor_path=str(path)))


def test_online_work_alone_falling_behind_the_real_engine_is_told_apart(fresh) -> None:
    """The profiler's overload check (profiling/online_lag.py) on real engine timings: an
    online replay far beyond the CPU engine (1,000 req/s: 120 prompts in 0.12 s, a queue
    whatever the machine's speed; at 40 req/s a quiet 2-core VM nearly keeps up) is
    behind, one it serves (3 req/s, the profiling default) is not."""
    if not (default_data_dir() / "azure-llm-trace-2023").is_dir():
        pytest.skip("shared data folder not present")
    from hygen_pod.contract.control import OfflineControl
    from hygen_pod.profiling.online_lag import online_load
    from hygen_pod.profiling.traces import azure_conversation
    from hygen_pod.profiling.workload import cpu_online
    from hygen_pod.vllm_adapter.engine import Engine, EngineRunner

    azure = azure_conversation()
    eng = Engine.from_llm(fresh.llm)
    v = eng.vocab_size
    slices = [
        cpu_online(azure, tag="keep", start=0, count=32, qps=3.0, vocab=v, seed=1),
        cpu_online(azure, tag="over", start=2000, count=120, qps=1000.0, vocab=v, seed=2),
    ]
    runner = EngineRunner(eng, slices, [], [], model="tiny")
    online_only = OfflineControl(mode="budget", budget_ms=0)
    keep, over = (online_load(runner.run(online_only, False, k).timings) for k in (0, 1))
    assert keep is not None and over is not None
    assert not keep.behind, keep
    assert over.behind and over.served < 0.9 and over.ttft_growth >= 3, over
