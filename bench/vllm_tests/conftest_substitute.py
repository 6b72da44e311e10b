"""bench/vllm_tests/run.sh copies this in as tests/v1/core/conftest.py of vLLM's sdist.

Run vLLM's scheduler tests offline (tiny local model) and, with HYGEN_SUBSTITUTE=1,
with HyGen's scheduler classes in place of vLLM's."""

import os

import pytest

MODEL = os.environ["HYGEN_TINY_MODEL"]


@pytest.fixture(autouse=True)
def _substitute(monkeypatch, request):
    from tests.v1.core import utils

    original = utils.create_scheduler

    def create(*args, **kwargs):
        kwargs["model"] = MODEL
        if os.environ.get("HYGEN_SUBSTITUTE") == "1" and kwargs.get("scheduler_cls") is None:
            from hygen_pod.vllm_adapter import scheduler as hygen

            # as create_scheduler picks AsyncScheduler from its argument (this CPU
            # platform resolves the config's async_scheduling to False)
            async_on = kwargs.get("async_scheduling", False)
            kwargs["scheduler_cls"] = (
                hygen.HyGenAsyncScheduler if async_on else hygen.HyGenScheduler
            )
        return original(*args, **kwargs)

    mod = request.module
    if hasattr(mod, "create_scheduler"):
        monkeypatch.setattr(mod, "create_scheduler", create)
    monkeypatch.setattr(utils, "create_scheduler", create)
