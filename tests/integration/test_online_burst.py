"""Load: an online burst at 4x the steady rate while a large batch runs on the real engine
(HyGen budget mode with a predictor fitted on this machine's engine)."""

from __future__ import annotations

import pytest

from tests.reliability.load import budget_pod, online_burst

pytestmark = pytest.mark.engine


def test_online_burst_during_a_batch_errs_nothing_and_loses_nothing(
    tiny_model, fitted_predictor, tmp_path
) -> None:
    pred = tmp_path / "predictor.json"
    fitted_predictor.save(pred)
    pod = budget_pod(tiny_model, tmp_path, pred).start()
    try:
        out, phases = online_burst(pod.url)
    finally:
        rc = pod.terminate()
    print("\n".join(out.notes))
    ref, steady, burst, after = phases
    assert rc == 0, pod.log_tail()
    assert (out.lost, out.duplicates) == (0, 0), out
    # no online error or timeout that online-only serving of the same burst did not have
    assert out.online_errors <= ref.errors, out.notes
    assert steady.offline_done > 0 and after.offline_done > 0, out.notes  # offline ran
    # the burst takes engine time from offline work, which catches up afterwards
    assert burst.offline_per_s < max(steady.offline_per_s, after.offline_per_s), out.notes
