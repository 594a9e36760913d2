"""Gallery ingestion with real Ray Data into real Milvus: a Lite file (the driver writes) and the standalone server
(Ray Data's parallel write tasks), each path by the tests that are about it."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import BadInput
from embedder.sources import list_source
from indexer.archive import FaceArchive
from indexer.errors import ModelMismatch
from indexer.store import CollectionInfo, FaceIndex, connect
from jobs.pipelines.ingest import ingest, photos_in
from tests.helpers import TINY_THRESHOLD, cli_here
from trainer.synthetic import write_dataset


@pytest.fixture
def gallery(tmp_path):
    root = tmp_path / "gallery"
    write_dataset(root, range(4), 3, size=32)
    (root / "person_00001" / "empty.jpg").write_bytes(b"")
    (root / "person_00002" / "text.png").write_bytes(b"hello, not an image")
    (root / "person_00003" / "cut.png").write_bytes((root / "person_00003" / "000.png").read_bytes()[:40])
    return root


def rows_of(uri, collection):
    client = connect(uri)
    index = FaceIndex(client, collection)
    ids = list(index.iter_ids())
    client.close()
    return ids


@pytest.mark.slow
@pytest.mark.stores("lite")
def test_ingest_skips_bad_files_and_reruns_without_duplicates(ray_local, milvus_uri, collection_name,
                                                             tiny_model_dir, gallery, tmp_path):
    report = tmp_path / "errors.csv"
    kwargs = {"milvus": milvus_uri, "gallery": collection_name, "batch_size": 4, "index_type": "FLAT",
              "archive": str(tmp_path / "archive")}
    photo = (gallery / "person_00000" / "000.png").read_bytes()
    with open(os.fsencode(gallery / "person_00000") + b"/caf\xe9.png", "wb") as handle:  # a Latin-1 file name
        handle.write(photo)
    first = ingest(gallery, tiny_model_dir, errors_csv=report, **kwargs)
    assert first.seen == 16 and first.embedded == 13 and len(first.skipped) == 3
    assert first.rows_in_collection == 13
    with open(report) as handle:
        rows = list(csv.DictReader(handle))
    assert {r["file"] for r in rows} == {"person_00001/empty.jpg", "person_00002/text.png", "person_00003/cut.png"}
    assert all(r["reason"] for r in rows)

    second = ingest(gallery, tiny_model_dir, **kwargs)
    assert second.rows_in_collection == 13  # upserted by stable ids, not appended
    ids = rows_of(milvus_uri, collection_name)
    assert len(ids) == len(set(ids)) == 13

    # every face's image is in the archive once, and embeds again to the vector the store holds
    from embedder.archiving import model_input
    from embedder.embed import TorchEmbedder

    archive = FaceArchive(kwargs["archive"], collection_name)
    entries = list(archive.entries())
    # the re-run stored no image again: its faces were there, unchanged
    assert sorted(e.face_id for e in entries) == sorted(ids) and archive.stats().dead == 0
    embedder = TorchEmbedder.from_checkpoint(tiny_model_dir)
    again = embedder.embed(np.stack([model_input(e.image, e.kind, embedder.spec) for e in entries]))
    client = connect(milvus_uri)
    stored = FaceIndex(client, collection_name).vectors([e.face_id for e in entries])
    client.close()
    assert min(float(v @ stored[e.face_id]) for v, e in zip(again, entries, strict=True)) > 0.9999


@pytest.mark.slow
@pytest.mark.stores("lite")
def test_vectors_in_milvus_equal_direct_inference(ray_local, milvus_uri, collection_name, tiny_model_dir, gallery):
    from embedder.embed import TorchEmbedder
    from embedder.preprocess import decode_image

    ingest(gallery, tiny_model_dir, milvus=milvus_uri, gallery=collection_name, batch_size=4)
    embedder = TorchEmbedder.from_checkpoint(tiny_model_dir)
    path = gallery / "person_00002" / "001.png"
    direct = embedder.embed(decode_image(path.read_bytes(), embedder.spec)[None])
    client = connect(milvus_uri)
    index = FaceIndex(client, collection_name)
    hit = index.search(direct, k=1)[0][0]
    assert index.info().threshold == TINY_THRESHOLD  # the model's calibrated threshold travels with the collection
    client.close()
    assert hit.source == "person_00002/001.png" and hit.score == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_manifest_with_face_ids_metadata_and_parquet_export(ray_local, tmp_path, tiny_model_dir, gallery):
    manifest = tmp_path / "faces.parquet"
    pq.write_table(pa.table({
        "uri": [str(gallery / "person_00000" / "000.png"), "file://" + str(gallery / "person_00001" / "000.png"),
                str(gallery / "missing.png"), str(gallery / "person_00002" / "000.png")],
        "identity": ["ann", "bob", "cy", ""],
        "face_id": ["A-1", "B-1", "C-1", "D-1"],
        "camera": ["front", "side", "x", "y"],
        "metadata": ['{"age": 30}', None, None, None],
    }), manifest)
    db, export = str(tmp_path / "m.db"), tmp_path / "vectors.parquet"
    summary = ingest(manifest, tiny_model_dir, milvus=db, export_parquet=export)
    assert summary.embedded == 2
    assert sorted(reason.split(":")[0] for _, reason in summary.skipped) == ["no identity", "unreadable file"]
    client = connect(db)
    ann = FaceIndex(client, "faces").faces_of("ann")
    client.close()
    assert ann[0]["metadata"] == {"camera": "front", "age": 30}
    table = pq.read_table(export)
    assert sorted(table["identity"].to_pylist()) == ["ann", "bob"]
    assert np.allclose(np.linalg.norm(np.stack(table["vector"].to_numpy(zero_copy_only=False)), axis=1), 1.0)


def test_a_tree_lists_a_persons_photos_at_any_depth_and_reports_what_it_cannot_name(gallery, tiny_spec):
    from jobs.pipelines.ingest import decode_batch

    photo = (gallery / "person_00000" / "000.png").read_bytes()
    (gallery / "person_00000" / "2019" / "june").mkdir(parents=True)
    (gallery / "person_00000" / "2019" / "june" / "beach.png").write_bytes(photo)  # still theirs
    (gallery / "loose.png").write_bytes(photo)  # in nobody's folder
    os.mkdir(os.fsencode(gallery) + b"/Jos\xe9")  # a folder name that is not UTF-8
    with open(os.fsencode(gallery) + b"/Jos\xe9/a.png", "wb") as handle:
        handle.write(photo)
    # a photo without a suffix, a HEIC (listed, then refused by name), a link whose target is gone, a linked folder
    (gallery / "person_00001" / "IMG_0001").write_bytes(photo)
    (gallery / "person_00001" / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    (gallery / "person_00001" / "gone.jpg").symlink_to(gallery / "nowhere.jpg")
    (gallery / "elsewhere").mkdir()
    (gallery / "elsewhere" / "2020.png").write_bytes(photo)
    (gallery / "person_00002" / "2020").symlink_to(gallery / "elsewhere", target_is_directory=True)
    rows = {r["source"]: r for r in list_source(gallery)}
    assert {"person_00001/IMG_0001", "person_00001/phone.HEIC", "person_00001/gone.jpg",
            "person_00002/2020/2020.png"} <= set(rows)
    assert rows["person_00000/2019/june/beach.png"]["identity"] == "person_00000"
    assert "not in a person's folder" in rows["loose.png"]["skip"]
    named = rows["Jos\\xe9/a.png"]
    assert named["identity"] == "Jos\\xe9" and "not valid UTF-8" in named["skip"]
    assert json.dumps(list(rows)).encode()  # every name is text a report and a store can hold
    picked = [rows[k] for k in ("person_00000/2019/june/beach.png", "loose.png", "Jos\\xe9/a.png",
                                "person_00001/IMG_0001", "person_00001/phone.HEIC", "person_00001/gone.jpg")]
    batch = {k: np.asarray([r[k] for r in picked], dtype=object) for k in picked[0]}
    decoded = decode_batch(batch, tiny_spec)
    assert [bool(e) for e in decoded["error"]] == [False, True, True, False, True, True]
    assert "HEIC" in decoded["error"][4]  # said by name: what to convert
    assert decoded["error"][5] == f"unreadable file: a link to {gallery / 'nowhere.jpg'}, which is not there"


def test_csv_manifest_rows(tmp_path):
    (tmp_path / "m.csv").write_text('path,identity,face_id,metadata\nimgs/a.jpg,007,x1,"{""k"": 1}"\n')
    [row] = list_source(tmp_path / "m.csv")
    assert row["uri"] == str(tmp_path / "imgs" / "a.jpg") and row["identity"] == "007"
    assert row["face_key"] == "x1" and json.loads(row["metadata"]) == {"k": 1}
    (tmp_path / "bad.csv").write_text("file,who\na.jpg,ann\n")
    with pytest.raises(BadInput, match="uri"):
        list_source(tmp_path / "bad.csv")


def test_unlabelled_sources_list_every_image_without_a_name(tmp_path, gallery):
    (gallery / "2024" / "june").mkdir(parents=True)
    (gallery / "2024" / "june" / "x.png").write_bytes((gallery / "person_00000" / "000.png").read_bytes())
    (gallery / ".cache").mkdir()
    (gallery / ".cache" / "y.png").write_bytes(b"")
    rows = list_source(gallery, unlabelled=True)
    assert len(rows) == 16 and {r["identity"] for r in rows} == {""}
    assert "2024/june/x.png" in {r["source"] for r in rows}
    (tmp_path / "photos.csv").write_text("uri,identity\na.jpg,ann\nb.jpg,\n")
    assert [r["identity"] for r in list_source(tmp_path / "photos.csv", unlabelled=True)] == ["ann", ""]
    (tmp_path / "plain.csv").write_text("uri\na.jpg\n")
    with pytest.raises(BadInput, match="--unlabelled"):
        list_source(tmp_path / "plain.csv")
    assert [r["identity"] for r in list_source(tmp_path / "plain.csv", unlabelled=True)] == [""]


def test_strangers_are_unlabelled_faces_marked_as_nobody_who_will_be_enrolled(tmp_path, gallery):
    rows = list_source(gallery, strangers=True)
    assert len(rows) == 15 and {r["identity"] for r in rows} == {""}
    assert all(json.loads(r["metadata"]) == {"stranger": True} for r in rows)
    (tmp_path / "photos.csv").write_text('uri,metadata\na.jpg,"{""event"": 3}"\n')
    assert json.loads(list_source(tmp_path / "photos.csv", strangers=True)[0]["metadata"]) == {"event": 3,
                                                                                              "stranger": True}
    (tmp_path / "named.csv").write_text("uri,identity\na.jpg,ann\nb.jpg,\n")
    with pytest.raises(BadInput, match="named 'ann'"):
        list_source(tmp_path / "named.csv", strangers=True)


@pytest.mark.slow
def test_unlabelled_ingestion_stores_faces_nobody_is_answered_as(ray_local, tmp_path, tiny_model_dir, gallery):
    db, archive = str(tmp_path / "u.db"), str(tmp_path / "archive")
    ingest(gallery, tiny_model_dir, milvus=db, index_type="FLAT", archive=archive)
    # as strangers: unlabelled faces with a mark (calibration takes them as they are)
    summary = ingest(gallery, tiny_model_dir, milvus=db, index_type="FLAT", strangers=True, archive=archive)
    assert summary.embedded == 12 and len(summary.skipped) == 3
    assert summary.rows_in_collection == 24  # the same photos again, as faces of their own: no name is lost
    client = connect(db)
    index = FaceIndex(client, "faces")
    identities = [i for _, i in index.labelled_faces()]
    marks = index.stored_metadata([f for f, _ in index.unlabelled_faces()])
    unnamed = index.search(np.stack(list(index.vectors(list(index.iter_ids())[:1]).values())), k=30,
                           among="unlabelled")[0]
    named = index.search(np.stack([index.vectors([unnamed[0].face_id])[unnamed[0].face_id]]), k=30)[0]
    client.close()
    assert len(identities) == 12 and len(unnamed) == 12 and {h.identity for h in unnamed} == {""}
    assert len(marks) == 12 and all(m.get("stranger") is True for m in marks.values())
    assert len(named) == 12 and "" not in {h.identity for h in named}
    assert len(FaceArchive(archive, "faces").live_versions()) == 24


def test_ingesting_another_model_is_refused(tmp_path, tiny_model_dir, gallery):
    db = str(tmp_path / "m.db")
    client = connect(db)
    FaceIndex(client, "faces").ensure(CollectionInfo("someone-elses-model", 16), index_type="FLAT")
    client.close()
    with pytest.raises(ModelMismatch, match="someone-elses-model"):
        ingest(gallery, tiny_model_dir, milvus=db)


def test_ingesting_with_a_model_the_gallery_moved_away_from_is_refused(tmp_path, tiny_model_dir, gallery):
    """After a re-embed's switch the old model's collection is still there (for a rollback); faces written to it
    would be answered by no search, so ingesting with the old model is refused before anything is embedded."""
    from embedder.embed import open_embedder
    from indexer.galleries import Galleries

    db = str(tmp_path / "moved.db")
    client = connect(db)
    galleries = Galleries(client, "faces")
    old = galleries.open(CollectionInfo(open_embedder(tiny_model_dir).spec.version, 16), create=True,
                         index_type="FLAT")
    new = galleries.prepare(CollectionInfo("the-next-model", 16), index_type="FLAT")
    galleries.switch(new.collection, lose=None)
    client.close()
    with pytest.raises(ModelMismatch, match="served by model the-next-model since a re-embed.*no search"):
        ingest(gallery, tiny_model_dir, milvus=db)
    client = connect(db)
    assert FaceIndex(client, old.collection).count() == 0
    client.close()


def _rows_written(uri: str, collection: str) -> int:
    client = connect(uri)
    try:
        return FaceIndex(client, collection).count() if client.has_collection(collection) else 0
    finally:
        client.close()


@pytest.mark.slow
# the default's one writer here; a killed job's parallel write tasks on the server: the re-embed's (test_reembed.py)
@pytest.mark.parametrize("store", ["lite"])
def test_killed_job_rerun_leaves_every_face_exactly_once(store, request, ray_local, tmp_path, tiny_model_dir,
                                                        collection_name, capsys):
    """SIGKILL half-way, then the same command again (in this process: tests/helpers.py, cli_here): Lite's single
    writer and the server's parallel Datasink."""
    root = tmp_path / "big"
    write_dataset(root, range(60), 10, size=32)
    (root / "person_00007" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    uri = str(tmp_path / "g.db") if store == "lite" else request.getfixturevalue("milvus_server_uri")
    command = [sys.executable, "-m", "jobs.cli", "ingest", str(root), "--model", str(tiny_model_dir),
               "--milvus", uri, "--gallery", collection_name, "--batch-size", "16",
               "--errors", str(tmp_path / "e.csv")]
    # a driver on the test's Ray (seconds to start, not tens); SIGKILL of the job still takes its tasks with it
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    job = subprocess.Popen(command, stderr=subprocess.PIPE if store == "lite" else subprocess.DEVNULL, text=True,
                           env=env, start_new_session=True)
    if store == "lite":  # the file is locked by the job: watch its progress lines
        for line in job.stderr:  # progress lines: "ingest: 512/601 img, 511 written (...)"
            if line.startswith("ingest: ") and int(line.split(", ")[1].split()[0]) > 0:
                break
    else:  # the server is shared: watch the rows arrive
        deadline = time.time() + 240
        while _rows_written(uri, collection_name) == 0 and job.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    written_before_kill = None if store == "lite" else _rows_written(uri, collection_name)
    os.killpg(job.pid, signal.SIGKILL)  # the whole job, without warning
    job.wait(timeout=120)
    assert job.returncode == -signal.SIGKILL
    if written_before_kill is not None:
        assert 0 < written_before_kill < 600, written_before_kill  # killed half-way, not before or after
    code, out, err = cli_here(capsys, *command[3:])
    assert code == 3, err[-2000:]  # finished, with one file skipped
    assert "person_00007/broken.jpg" in (tmp_path / "e.csv").read_text()
    assert "images seen 601, faces embedded 600, skipped 1" in out
    ids = rows_of(uri, collection_name)
    assert len(ids) == len(set(ids)) == 600
    archived = [e.face_id for e in FaceArchive(os.environ["ARCMATCH_ARCHIVE_URI"], collection_name).entries()]
    assert sorted(archived) == sorted(ids)  # the archive too: every face once, none lost to the kill


@pytest.mark.slow
@pytest.mark.stores("server")  # the check in Ray Data's write tasks (the driver's is the same function)
def test_ingesting_a_named_tree_again_keeps_not_this_person_and_a_merge(ray_local, milvus_uri, collection_name,
                                                                       tmp_path, tiny_model_dir):
    from embedder.embed import open_embedder
    from indexer.ids import UNLABELLED
    from jobs.curation import Curator
    from jobs.service import IdentityService

    root = tmp_path / "named"
    write_dataset(root, range(3), 3, size=32)
    uri, archive_uri = milvus_uri, str(tmp_path / "archive")
    kwargs = {"milvus": uri, "gallery": collection_name, "batch_size": 4, "index_type": "FLAT",
              "archive": archive_uri}
    ingest(root, tiny_model_dir, **kwargs)
    client = connect(uri)
    service = IdentityService(open_embedder(tiny_model_dir), FaceIndex(client, collection_name),
                              archive=FaceArchive(archive_uri, collection_name))
    face, erased = (f["id"] for f in service.identity("person_00001")[:2])
    Curator(service, None).reject("person_00001", int(face))
    Curator(service, None).merge_identities("person_00000", "person_00002", proceed=True)  # said to be one person
    assert service.delete_face("person_00001", int(erased))  # a photo taken out of the gallery
    client.close()

    again = ingest(root, tiny_model_dir, **kwargs)
    assert again.embedded == 4 and len(again.skipped) == 5
    reasons = dict(again.skipped)
    [reason] = [r for s, r in reasons.items() if "person_00001" in s and "rejected" in r]
    assert "rejected from 'person_00001' (not this person)" in reason
    merged = [r for s, r in reasons.items() if "person_00002" in s]
    assert len(merged) == 3 and all("'person_00002' was merged into 'person_00000'" in r for r in merged)
    [reason] = [r for s, r in reasons.items() if "person_00001" in s and "rejected" not in r]
    assert reason.startswith("deleted from the gallery (on 20") and "--include-deleted" in reason
    client = connect(uri)
    index = FaceIndex(client, collection_name)
    row = index.rows([int(face)])[int(face)]
    # the merge holds, the deleted face stays deleted
    assert dict(index.list_identities()) == {"person_00000": 6, "person_00001": 1}
    client.close()
    assert row.identity == UNLABELLED and row.metadata["rejected_from"] == ["person_00001"]
    archived = next(FaceArchive(archive_uri, collection_name).entries({int(face)}))
    assert archived.identity == UNLABELLED  # a re-embed from the archive keeps it too

    back = ingest(root, tiny_model_dir, include_deleted=True, **kwargs)  # asked for: the deleted photo returns
    assert len(back.skipped) == 4 and not any("deleted" in r for _, r in back.skipped)
    client = connect(uri)
    assert dict(FaceIndex(client, collection_name).list_identities()) == {"person_00000": 6, "person_00001": 2}
    client.close()
    assert int(erased) in FaceArchive(archive_uri, collection_name).live_versions()


def test_an_upsert_carries_a_faces_rejections(tmp_path):
    from indexer.ids import UNLABELLED
    from indexer.store import FaceRow
    from indexer.writer import GalleryWriter
    from jobs.pipelines.sink import keep_rejections

    client = connect(str(tmp_path / "k.db"))
    index = FaceIndex(client, "faces")
    index.ensure(CollectionInfo("m1", 4, None, {}), index_type="FLAT")
    vector = np.array([1, 0, 0, 0], np.float32)
    index.upsert([FaceRow("a.png", UNLABELLED, vector, 1, {"rejected_from": ["ann"]}),
                  FaceRow("b.png", "bob", vector, 2, {"rejected_from": ["cy"]}),
                  FaceRow("d.png", "dan", vector, 4, {"rejected_from": ["eve"]})])  # named someone else since
    skipped = []
    incoming = [FaceRow("a.png", "ann", vector, 1, {}), FaceRow("b.png", "bob", vector, 2, {"w": 1}),
                FaceRow("c.png", "cy", vector, 3, {}), FaceRow("d.png", "eve", vector, 4, {})]
    kept = keep_rejections(GalleryWriter(index), incoming, skipped)
    client.close()
    assert [r.face_id for r in kept] == [2, 3] and [s[0] for s in skipped] == ["a.png", "d.png"]
    assert kept[0].metadata == {"w": 1, "rejected_from": ["cy"]} and kept[1].metadata == {}


def test_the_bar_counts_every_photo_once_whatever_its_name(tmp_path, tiny_spec):
    """A photo counts by its first row: one whose name ends like a face's key (`#3`: before, it was not counted)
    and one that cannot be read count too."""
    from jobs.pipelines.ingest import decode_batch
    from tests.helpers import png

    for name in ("ann.png", "x#3.png"):
        (tmp_path / name).write_bytes(png(1))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    names = ["ann.png", "x#3.png", "broken.png"]
    batch = {"uri": np.asarray([str(tmp_path / n) for n in names], dtype=object),
             "face_key": np.asarray(names, dtype=object), "identity": np.asarray(["ann", "x", "y"], dtype=object),
             "source": np.asarray(names, dtype=object), "metadata": np.asarray(["{}"] * 3, dtype=object)}
    decoded = decode_batch(batch, tiny_spec)
    assert list(decoded["first_face"]) == [True, True, True] and photos_in(decoded) == 3  # a group photo's faces:
    # tests/jobs/pipelines/test_ingest_faces.py


def test_ingestion_takes_the_pixel_limit_a_search_takes(tmp_path, tiny_spec):
    from jobs.pipelines.ingest import decode_batch
    from tests.helpers import png

    (tmp_path / "ann.png").write_bytes(png(1))  # 32x32
    batch = {"uri": np.asarray([str(tmp_path / "ann.png")], dtype=object), "face_key": np.asarray(["a"], dtype=object),
             "identity": np.asarray(["ann"], dtype=object), "source": np.asarray(["ann.png"], dtype=object),
             "metadata": np.asarray(["{}"], dtype=object)}
    assert decode_batch(batch, tiny_spec)["error"][0] == ""
    refused = decode_batch(batch, tiny_spec, max_pixels=1000)["error"][0]
    assert "over the limit of 1000 pixels (ARCMATCH_MAX_PIXELS)" in refused
