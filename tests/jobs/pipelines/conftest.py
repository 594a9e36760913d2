"""The Ray cluster of `arcmatch submit`'s tests and the node-fault tests: started once (both modules run in one
test process, tests/conftest.py), as starting a cluster's nodes is the costliest part of either, and stopped after
the last test that uses it rather than at the session's end: its idle nodes would take CPU from the rest of the
suite."""

import pytest

from tests.ray_cluster import RAY_CLUSTER, Cluster, cluster_turn

_running: dict = {}


@pytest.fixture
def ray_cluster(tmp_path_factory):
    """A head with no CPUs (the Jobs API, the drivers of submitted jobs) and two one-CPU worker nodes."""
    if "shared" not in _running:
        _running["turn"] = cluster_turn()  # no other test's cluster beside it (tests/ray_cluster.py)
        _running["shared"] = Cluster(tmp_path_factory.mktemp("nodes"), workers=2, quick_checks=True)
    return _running["shared"]


def pytest_runtest_teardown(item, nextitem):
    """The cluster stops once the next test (under xdist: the next this process was given) is of neither module."""
    if "shared" in _running and (nextitem is None or not nextitem.nodeid.startswith(RAY_CLUSTER)):
        _running.pop("shared").stop()
        _running.pop("turn").close()
