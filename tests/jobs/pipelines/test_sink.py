"""The write step both ingestion paths share (jobs/pipelines/sink.py): a photo that only shares its path with a
face already in the gallery is kept as a face of its own, and a tree ingested again still adds nothing twice."""

import numpy as np

from indexer.ids import UNLABELLED, face_id
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect
from indexer.writer import GalleryWriter
from jobs.pipelines.sink import write_rows


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
    return v / np.linalg.norm(v)


def test_two_photos_of_one_path_are_two_faces_and_each_tree_again_adds_nothing(tmp_path):
    index = FaceIndex(connect(str(tmp_path / "g.db")), "faces")
    index.ensure(CollectionInfo("model-a", 16, 0.5), index_type="FLAT")
    writer = GalleryWriter(index)
    key = face_id("unlabelled:IMG_0001.jpg")  # the same name in two event folders, each ingested as a tree

    def ingest(vector: np.ndarray) -> tuple[list[int], list[str]]:
        apart: list[str] = []
        rows, written = write_rows(writer, {}, [FaceRow("IMG_0001.jpg", UNLABELLED, vector, key, {})], [],
                                   curated=True, apart=apart)
        index.flush()
        assert written == 1
        return [r.face_id for r in rows], apart

    first, second, third = unit(1), unit(2), unit(3)
    assert ingest(first) == ([key], [])
    [other], apart = ingest(second)  # another photo: its own face, the first one untouched
    assert other != key and apart == ["IMG_0001.jpg"]
    assert ingest(second * 0.999 + first * 0.001)[0] == [other]  # that tree again: its face, not a third
    assert ingest(first)[0] == [key]  # the first tree again: its own face
    [third_id], _ = ingest(third)
    assert third_id not in (key, other)
    stored = index.vectors([key, other, third_id])
    assert index.count() == 3 and all(float(stored[f] @ v) > 0.99 for f, v in
                                      ((key, first), (other, second), (third_id, third)))  # each its own photo
    index.client.close()
