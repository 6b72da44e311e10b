"""The ServingSLO's offline mode: auto runs the mode its profile found did more offline work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hygen_operator.resources import ServingSLOSpec
from hygen_operator.servingslo import resolve_mode


def test_auto_is_the_default_and_a_bad_mode_is_refused_naming_the_field() -> None:
    spec = ServingSLOSpec.model_validate({"model": "m", "slo": {"p99TbtMs": 50}})
    assert spec.offline_mode == "auto"
    with pytest.raises(ValidationError, match="offlineMode"):
        ServingSLOSpec.model_validate({"model": "m", "slo": {"p99TbtMs": 50}, "offlineMode": "x"})


@pytest.mark.parametrize(
    ("wanted", "best", "runs"),
    [
        ("auto", "qps", "qps"),
        ("auto", "budget", "budget"),
        ("auto", None, "budget"),  # a status profiled before the choice existed
        ("budget", "qps", "budget"),  # a pinned mode ignores the profile's choice
        ("qps", "budget", "qps"),
    ],
)
def test_the_mode_run(wanted: str, best: str | None, runs: str) -> None:
    summary = {"budgetMs": 10.0, "qps": 0.5} | ({"bestMode": best} if best else {})
    assert resolve_mode(wanted, summary) == runs
