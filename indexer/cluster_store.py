"""Where `arcmatch cluster` keeps its answer: a cluster id per unlabelled face, and each cluster's size, cohesion
and representative face, beside the face archive (the same filesystem root: a local directory, `s3://`, ...).

Why not in Milvus: the questions asked of clusters are "the largest first, a page at a time" and "the faces of
cluster 12", and Milvus has no GROUP BY or ORDER BY; a scan of a million faces per page would be the cost. The
answer of one run is two small Parquet files (16 bytes per face), read whole once and kept in memory: a reader
lists the runs on each question and reads again only when a newer run has appeared.

    <root>/<gallery>/clusters/<collection>/run-<time>.faces.parquet      face_id, cluster
    <root>/<gallery>/clusters/<collection>/run-<time>.clusters.parquet   cluster, size, cohesion, representative

Runs are written once, under temporary names and then moved, so a reader sees a whole run or the previous one;
the latest run is the answer, the one before it is kept (a reader that listed it can still open it). Clusters
belong to one collection because they come from its vectors: a re-embed's new collection is clustered afresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from indexer.archive import open_location
from indexer.errors import BackendUnavailable

KEEP_RUNS = 2


@dataclass(frozen=True)
class ClusterInfo:
    cluster: int
    size: int
    cohesion: float
    representative: int  # face id


@dataclass(frozen=True)
class Run:
    """One run's answer: parallel arrays of faces and their clusters, and the clusters, largest first."""

    name: str
    face_ids: np.ndarray  # int64, sorted
    cluster_of: np.ndarray  # int64, one per face
    clusters: list[ClusterInfo]

    def previous_labels(self, face_ids: np.ndarray) -> np.ndarray:
        """The cluster of each of `face_ids` in this run, -1 for faces it did not have."""
        face_ids = np.asarray(face_ids, np.int64)
        if not len(self.face_ids):
            return np.full(len(face_ids), -1, np.int64)
        at = np.clip(np.searchsorted(self.face_ids, face_ids), 0, len(self.face_ids) - 1)
        return np.where(self.face_ids[at] == face_ids, self.cluster_of[at], -1)

    def members(self, cluster: int) -> np.ndarray:
        return self.face_ids[self.cluster_of == cluster]


class ClusterStore:
    def __init__(self, root: str, gallery: str, collection: str) -> None:
        self.fs, base = open_location(root, "the cluster store")
        self.root = f"{base}/{gallery}/clusters/{collection}"
        self._kept: Run | None = None  # the latest run read or written by this store

    def _runs(self) -> list[str]:
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(self.root, allow_not_found=True))
        names = {i.base_name.split(".")[0] for i in infos
                 if i.type == fs.FileType.File and i.base_name.endswith(".clusters.parquet")}
        return sorted(names)

    def write(self, face_ids: np.ndarray, cluster_of: np.ndarray, clusters: list[ClusterInfo]) -> str:
        """A new run (face ids sorted on the way in); returns its name."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        order = np.argsort(face_ids, kind="stable")
        faces = pa.table({"face_id": np.asarray(face_ids, np.int64)[order],
                          "cluster": np.asarray(cluster_of, np.int64)[order]})
        summary = pa.table({"cluster": [c.cluster for c in clusters], "size": [c.size for c in clusters],
                            "cohesion": [c.cohesion for c in clusters],
                            "representative": [c.representative for c in clusters]},
                           schema=pa.schema([("cluster", pa.int64()), ("size", pa.int64()),
                                             ("cohesion", pa.float64()), ("representative", pa.int64())]))
        name = f"run-{time.time_ns():020d}"
        try:
            self.fs.create_dir(self.root, recursive=True)
            for suffix, table in ((".faces.parquet", faces), (".clusters.parquet", summary)):  # clusters last:
                temporary = f"{self.root}/.{name}{suffix}.tmp"  # a run exists once its summary does
                pq.write_table(table, temporary, filesystem=self.fs)
                self.fs.move(temporary, f"{self.root}/{name}{suffix}")
            for old in self._runs()[:-KEEP_RUNS]:
                for suffix in (".faces.parquet", ".clusters.parquet"):
                    self.fs.delete_file(f"{self.root}/{old}{suffix}")
        except OSError as exc:
            raise BackendUnavailable(f"the cluster store could not be written ({type(exc).__name__})") from exc
        self._kept = Run(name, faces["face_id"].to_numpy(), faces["cluster"].to_numpy(), list(clusters))
        return name

    def latest(self) -> Run | None:
        """The latest run, or None before the first; read from the files only when it is not the one kept."""
        import pyarrow.parquet as pq

        runs = self._runs()
        if not runs:
            return None
        name = runs[-1]
        if self._kept is not None and self._kept.name == name:
            return self._kept
        try:
            faces = pq.read_table(f"{self.root}/{name}.faces.parquet", filesystem=self.fs)
            summary = pq.read_table(f"{self.root}/{name}.clusters.parquet", filesystem=self.fs).to_pylist()
        except OSError as exc:
            raise BackendUnavailable(f"the cluster store could not be read ({type(exc).__name__})") from exc
        self._kept = Run(name, faces["face_id"].to_numpy(), faces["cluster"].to_numpy(),
                         [ClusterInfo(**row) for row in summary])
        return self._kept

    def drop(self) -> None:
        from pyarrow import fs

        if self.fs.get_file_info(self.root).type != fs.FileType.NotFound:
            self.fs.delete_dir(self.root)
