"""Shared fixtures: ``cluster``, a fresh emulated cluster per test (helpers/kube/cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.kube.cluster import Cluster, running_cluster
from tests.helpers.s3_server import S3Server, s3_server


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as c:
        yield c


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One local S3 API server (moto, signatures checked) for the session; tests take a
    fresh bucket each (``s3.bucket()``)."""
    with s3_server() as server:
        yield server
