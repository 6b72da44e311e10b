"""bench/host_speed.py: vLLM's own update_from_output procedure times a full decode batch,
and scheduler_ab.py's --host-speed scales a difference by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.bench_script import load_bench

pytest.importorskip("vllm")

hs = load_bench("host_speed")
ab = load_bench("scheduler_ab")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hygen_pod.dev.tiny_model import build_tiny_llama

    path = tmp_path_factory.mktemp("speed") / "tiny"
    build_tiny_llama(path)
    return path


def test_the_procedure_times_every_request_decoding(model: Path) -> None:
    s = hs.scheduler(model, 8)
    reqs = hs._requests(8, 5)
    for r in reqs:
        s.add_request(r)
    out = s.schedule()
    assert out.num_scheduled_tokens == {r.request_id: hs.PROMPT for r in reqs}
    s.update_from_output(out, hs._output(out, 0))
    out = s.schedule()  # the decode step the procedure times: one token each
    assert out.num_scheduled_tokens == {r.request_id: 1 for r in reqs}
    assert not s.kv_cache_manager.enable_caching and s.log_stats
    assert hs.update_ms(model, 8, warmup=2, iters=5) > 0


def test_a_short_batch_is_refused(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make = hs._requests

    def one_ends_early(batch: int, max_tokens: int):  # type: ignore[no-untyped-def]
        reqs = make(batch, max_tokens)
        reqs[0].max_tokens = 3  # finishes during the warm-up: the timed steps run 7 of 8
        return reqs

    monkeypatch.setattr(hs, "_requests", one_ends_early)
    with pytest.raises(RuntimeError, match="7 of 8 requests scheduled"):
        hs.update_ms(model, 8, warmup=4, iters=5)


def test_the_difference_is_scaled_by_the_published_figure() -> None:
    published = hs.PUBLISHED[hs.BATCH]
    # this machine twice as slow as the published host: 400 us becomes 200 us
    line = ab.host_speed_line([published * 2, published * 2.2, published * 1.8], 400.0, 20.0)
    assert "2.00x slower" in line and "~+200 us" in line and "1.00% of the step" in line
    assert "on any host at least 1.00x as fast as this machine" in line  # 400 us: 2% of 20 ms
    assert "n/a" not in ab.host_speed_line([published], 100.0, None)


def test_scheduler_ab_prints_the_scaled_row(capsys: pytest.CaptureFixture[str]) -> None:
    ab.main(["--stock", "--running", "16", "--cases", "online", "--steps", "20",
             "--repeats", "2", "--host-speed"])  # fmt: skip
    out = capsys.readouterr().out
    assert "host speed: vLLM's update_from_output at 256" in out
    assert "slower; tree - other on that host" in out


def test_the_probe_runs_through_the_measured_steps(model: Path) -> None:
    from hygen_pod.contract.control import OfflineControl
    from hygen_pod.policy.predictor import LatencyPredictor

    tree = ("tree", ab.so.ProbedHyGenAsync, OfflineControl(mode="budget", budget_ms=1000.0),
            LatencyPredictor(["intercept", "num_decodes"], [0.001, 1e-6]))  # fmt: skip
    probe = hs.Probe(model, 8, life=40)
    ab.run_case("online", 16, 60, True, [tree], probe=probe)
    # a burst at measured steps 0, 25 and 50; a fresh batch once 40 steps are used
    assert len(probe.times) == 3 * (ab.SPEED_BURST - ab.SPEED_WARM)
