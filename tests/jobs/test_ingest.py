"""Gallery ingestion with real Ray Data and a real Milvus Lite file."""

import csv

import numpy as np
import pytest

from indexer.errors import ModelMismatch
from indexer.store import CollectionInfo, FaceIndex
from jobs.ingest import ingest
from trainer.synthetic import write_dataset


@pytest.fixture
def gallery(tmp_path):
    root = tmp_path / "gallery"
    write_dataset(root, range(4), 3, size=32)
    (root / "person_00001" / "empty.jpg").write_bytes(b"")
    (root / "person_00002" / "text.png").write_bytes(b"hello, not an image")
    (root / "person_00003" / "tiny.png").write_bytes((root / "person_00003" / "000.png").read_bytes()[:40])
    return root


@pytest.mark.slow
def test_ingest_skips_bad_files_and_reruns_without_duplicates(ray_local, milvus_lite, tiny_model_dir, gallery,
                                                             tmp_path):
    index = FaceIndex(milvus_lite, "faces")
    report = tmp_path / "errors.csv"
    first = ingest(gallery, tiny_model_dir, index, batch_size=4, index_type="FLAT", errors_csv=report)
    assert first.seen == 15 and first.embedded == 12 and len(first.skipped) == 3
    assert first.rows_in_collection == 12
    with open(report) as handle:
        rows = list(csv.DictReader(handle))
    assert {r["file"] for r in rows} == {"person_00001/empty.jpg", "person_00002/text.png", "person_00003/tiny.png"}
    assert all(r["reason"] for r in rows)

    second = ingest(gallery, tiny_model_dir, index, batch_size=4, index_type="FLAT")
    assert second.rows_in_collection == 12  # upserted by stable ids, not appended
    assert len(set(index.iter_ids())) == 12
    assert index.info().threshold == 0.5  # the model's calibrated threshold travels with the collection


@pytest.mark.slow
def test_vectors_in_milvus_equal_direct_inference(ray_local, milvus_lite, tiny_model_dir, gallery):
    from embedder.embed import TorchEmbedder
    from embedder.preprocess import decode_image

    index = FaceIndex(milvus_lite, "faces")
    ingest(gallery, tiny_model_dir, index, batch_size=4, index_type="FLAT")
    embedder = TorchEmbedder.from_checkpoint(tiny_model_dir)
    path = gallery / "person_00002" / "001.png"
    direct = embedder.embed(decode_image(path.read_bytes(), embedder.spec)[None])
    hit = index.search(direct, k=1)[0][0]
    assert hit.source == "person_00002/001.png" and hit.score == pytest.approx(1.0, abs=1e-4)


def test_ingesting_another_model_is_refused(milvus_lite, tiny_model_dir, gallery):
    index = FaceIndex(milvus_lite, "faces")
    index.ensure(CollectionInfo("someone-elses-model", 16), index_type="FLAT")
    with pytest.raises(ModelMismatch, match="someone-elses-model"):
        ingest(gallery, tiny_model_dir, index)
    assert np.isfinite(index.count())
