"""Faults and bad input on an emulated cluster: after each, the job converges with every
result written exactly once, and online traffic beside it saw no errors. One seeded run of
each scenario here; `bench/soak.py` repeats them."""

from __future__ import annotations

import pytest

from tests.helpers.kube.cluster import Cluster
from tests.reliability.scenarios import SCENARIOS, run_scenario


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_loses_and_duplicates_nothing(cluster: Cluster, name: str) -> None:
    out = run_scenario(name, cluster, 1)
    print(out)
    assert (out.lost, out.duplicates, out.breaches) == (0, 0, 0), out
    assert out.online_errors in (None, 0), out
    if out.online_sent is not None:
        assert out.online_sent > 20, out  # the traffic really ran
