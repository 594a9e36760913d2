"""The cluster store (indexer/cluster_store.py): a run read once and kept, a newer run from another writer seen at
the next question, and only the last runs kept."""

from __future__ import annotations

import numpy as np

from indexer.cluster_store import KEEP_RUNS, ClusterInfo, ClusterStore


def run_of(store: ClusterStore, faces: list[int], clusters: list[int]) -> str:
    sizes = {c: clusters.count(c) for c in clusters}
    infos = [ClusterInfo(c, n, 0.9, faces[clusters.index(c)]) for c, n in sorted(sizes.items(), key=lambda x: -x[1])]
    return store.write(np.array(faces), np.array(clusters), infos)


def test_a_run_is_kept_in_memory_until_a_newer_one_appears(tmp_path):
    api, job = ClusterStore(str(tmp_path), "faces", "c1"), ClusterStore(str(tmp_path), "faces", "c1")
    assert api.latest() is None
    first = run_of(job, [30, 10, 20], [1, 2, 1])
    run = api.latest()
    assert run.name == first and list(run.face_ids) == [10, 20, 30] and list(run.members(1)) == [20, 30]
    assert api.latest() is run  # not read again
    second = run_of(job, [10, 20], [5, 5])
    assert api.latest().name == second and [c.cluster for c in api.latest().clusters] == [5]
    written = run_of(api, [40], [7])  # its own write is what it answers next, without a read
    assert api.latest().name == written and list(api.latest().face_ids) == [40]
    for _ in range(KEEP_RUNS):
        run_of(job, [1], [1])
    assert len(list((tmp_path / "faces" / "clusters" / "c1").glob("*.clusters.parquet"))) == KEEP_RUNS
