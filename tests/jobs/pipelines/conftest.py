"""The Ray cluster of `arcmatch submit`'s tests and the node-fault tests: one per test run (both modules run in
one test process, tests/conftest.py), as starting a cluster's nodes is the costliest part of either."""

import pytest

from tests.ray_cluster import Cluster


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A head with no CPUs (the Jobs API, the drivers of submitted jobs) and two one-CPU worker nodes."""
    made = Cluster(tmp_path_factory.mktemp("nodes"))
    try:
        made.add_worker()
        made.add_worker()
        yield made
    finally:
        made.stop()
