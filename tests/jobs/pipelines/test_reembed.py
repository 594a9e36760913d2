"""A model upgrade (jobs/pipelines/reembed.py) on real Milvus and a real local Ray: API enrollments survive it,
deletes stay deleted, the old model's processes keep searching and stop writing, and rollback is one call."""

from __future__ import annotations

import pytest

from common.errors import Conflict
from embedder.errors import ModelError
from indexer import distinct
from indexer.archive import FaceArchive
from indexer.errors import FacesAtStake, GalleryMoved, ModelMismatch
from indexer.galleries import Galleries
from indexer.store import connect
from jobs.pipelines.reembed import MissingFromArchive, reembed
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.helpers import cli_here, png


def settings(model, milvus_uri, gallery, archive, **extra) -> Settings:
    return Settings(model=model, milvus_uri=milvus_uri, gallery=gallery, archive_uri=str(archive),
                    _env_file=None, **extra)


def best(service: IdentityService, photo: bytes):
    return service.identify([photo], select="largest")[0][0].decision


@pytest.mark.slow
@pytest.mark.stores("lite")  # the job's logic; the killed run below and the run beside traffic are on the server
def test_api_enrollments_survive_an_upgrade_and_deletes_stay_deleted(ray_local, milvus_uri, collection_name,
                                                                     tiny_model_dir, other_model_dir, tmp_path):
    archive = tmp_path / "archive"
    old = IdentityService.open(settings(tiny_model_dir, milvus_uri, collection_name, archive), create=True)
    ann = old.enroll("ann", [("a1.png", png(1)), ("a2.png", png(1, 1))]).face_ids
    old.enroll("bob", [("b.png", png(2))])
    old.enroll("eve", [("e.png", png(3))])
    old.delete_face("ann", ann[1])
    old.delete_identity("eve")
    distinct.add(old.index, "ann", "bob")  # a person said so: it is about people, not a model
    expected = {f: i for f, i in ((ann[0], "ann"),)} | {old.identity("bob")[0]["id"]: "bob"}

    dry = reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(archive),
                  dry_run=True)
    assert (dry.in_source, dry.to_embed, dry.not_archived, dry.switched) == (2, 2, 0, False)

    summary = reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(archive),
                      grace_s=0, index_type="FLAT")
    assert summary.switched and summary.in_target == 2 and summary.threshold == 0.6 and not summary.skipped

    new = IdentityService.open(settings(other_model_dir, milvus_uri, collection_name, archive))
    assert new.index.collection == summary.target and new.ready()["in_service"]
    assert {r["id"]: r["identity"] for r in new.index.faces_of("ann") + new.index.faces_of("bob")} == expected
    assert best(new, png(1)).identity == "ann" and best(new, png(2)).identity == "bob"
    assert new.index.faces_of("eve") == [] and new.lookup.threshold() == 0.6  # the new model's calibration travelled
    assert distinct.pairs(new.index) == {frozenset(("ann", "bob"))}

    # the old model's process: still answers from its own collection, takes no writes
    assert not old.ready(max_age_s=0)["in_service"] and best(old, png(1)).identity == "ann"
    with pytest.raises(GalleryMoved):
        old.enroll("zed", [("z.png", png(4))])
    with pytest.raises(Conflict, match="already served"):
        reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(archive))
    # ... and a process started with the old model now (a search from the command line, a replica restarted) is
    # refused: the collection it would read no longer takes the gallery's writes (zed above)
    with pytest.raises(ModelMismatch, match="no longer in service"):
        IdentityService.open(settings(tiny_model_dir, milvus_uri, collection_name, archive))

    galleries = Galleries(connect(milvus_uri), collection_name)
    assert galleries.rollback() == summary.source  # one call back; the old model is in service again
    assert old.ready(max_age_s=0)["in_service"]
    for service in (old, new):
        service.close()


@pytest.mark.stores("lite")
def test_faces_never_archived_block_the_switch_and_a_model_needs_a_threshold(milvus_uri, collection_name,
                                                                           tiny_model_dir, other_model_dir,
                                                                           tmp_path):
    old = IdentityService.open(settings(tiny_model_dir, milvus_uri, collection_name, tmp_path / "a"), create=True)
    old.archive = None  # as a gallery enrolled before the archive existed
    old.enroll("ann", [("a.png", png(1))])
    old.close()
    with pytest.raises(MissingFromArchive, match="never archived"):
        reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(tmp_path / "a"))
    assert FaceArchive(str(tmp_path / "a"), collection_name).stats().live == 0

    (tiny := tmp_path / "uncalibrated").mkdir()
    for item in other_model_dir.iterdir():
        if "calibration" not in item.name:
            (tiny / item.name).write_bytes(item.read_bytes())
    with pytest.raises(ModelError, match="threshold"):
        reembed(str(tiny), milvus=milvus_uri, gallery=collection_name, archive=str(tmp_path / "a"))


@pytest.mark.slow
@pytest.mark.parametrize("store", ["server"])
def test_searches_never_fail_and_writes_during_the_job_are_neither_lost_nor_resurrected(
        store, ray_local, milvus_server_uri, tiny_model_dir, other_model_dir, tmp_path):
    """On the server, where the API, the writers and the job run truly side by side."""
    import threading
    import time

    import httpx

    from jobs.api.app import create_app
    from tests.helpers import WRITE_ENTRY, W, live_app

    archive, milvus_uri, collection_name = tmp_path / "archive", milvus_server_uri, f"during_{time.time_ns()}"
    old_settings = settings(tiny_model_dir, milvus_uri, collection_name, archive, api_keys=WRITE_ENTRY,
                            audit_dir=tmp_path / "audit")
    with live_app(create_app(old_settings)) as base, httpx.Client(base_url=base, timeout=60,
                                                                  headers=W) as api:
        for n in range(30):
            answer = api.post(f"/v1/identities/p{n}/faces", files=[("images", ("a.png", png(100 + n)))])
            assert answer.status_code == 201
        stop, searches, failures = threading.Event(), [0], []

        def search() -> None:
            with httpx.Client(base_url=base, timeout=60, headers=W) as client:
                while not stop.is_set():
                    answer = client.post("/v1/search", files={"image": ("p.png", png(100))})
                    searches[0] += 1
                    if answer.status_code != 200:
                        failures.append(answer.status_code)
                    stop.wait(0.05)  # steady traffic, not a loop that takes a core from the job it watches

        acknowledged, deleted, unexpected = set(), set(), []

        def write() -> None:  # enrollments and deletes while the job runs, until the old model refuses them
            with httpx.Client(base_url=base, timeout=60, headers=W) as client:
                for n in range(60):
                    if stop.is_set():
                        return
                    answer = client.post(f"/v1/identities/w{n}/faces", files=[("images", ("w.png", png(500 + n)))])
                    if answer.status_code == 503:  # the old model is out of service: the switch has come
                        return
                    if answer.status_code != 201:
                        unexpected.append(("enroll", answer.status_code))
                        return
                    acknowledged.add(int(answer.json()["face_ids"][0]))
                    if n % 3 == 0:
                        status = client.delete(f"/v1/identities/p{n % 30}").status_code
                        if status == 503:  # the switch came between the enrollment and this delete
                            return
                        if status not in (200, 404):
                            unexpected.append(("delete", status))
                            return
                        deleted.add(f"p{n % 30}")

        threads = [threading.Thread(target=search), threading.Thread(target=write)]
        for thread in threads:
            thread.start()
        summary = reembed(str(other_model_dir), milvus=milvus_uri, gallery=collection_name, archive=str(archive),
                          grace_s=2, index_type="FLAT")
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert unexpected == []  # a write the old model still served was answered 201, 200 or 404, or refused with 503
    assert acknowledged and deleted  # writes did run beside the job
    assert searches[0] > 10 and failures == []  # every search answered, through the job and the switch
    new = IdentityService.open(settings(other_model_dir, milvus_uri, collection_name, archive))
    in_new = {int(r["id"]): r["identity"] for name in [f"p{n}" for n in range(30)] + [f"w{n}" for n in range(60)]
              for r in new.index.faces_of(name)}
    assert acknowledged <= set(in_new)  # no acknowledged enrollment lost
    assert not {name for name in in_new.values()} & deleted  # no deleted person came back
    assert len(in_new) == 30 - len(deleted) + len(acknowledged) == summary.in_target
    new.close()
    client = connect(milvus_uri)
    Galleries(client, collection_name).drop_all()  # the server outlives the test
    client.close()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["server"])  # where parallel writers meet a kill (Lite's one writer: ingestion's)
def test_a_killed_reembed_rerun_ends_with_every_face_once(store, request, ray_local, tmp_path, tiny_model_dir,
                                                          other_model_dir, collection_name, monkeypatch, capsys):
    """SIGKILL half-way through the copy, a delete while it is down, the same command again (in this process:
    tests/helpers.py, cli_here)."""
    import os
    import signal
    import subprocess
    import sys

    from indexer.store import FaceIndex
    from jobs.pipelines.ingest import ingest
    from jobs.progress import Console
    from trainer.synthetic import write_dataset

    root = tmp_path / "gallery"
    write_dataset(root, range(10), 10, size=32)
    uri = request.getfixturevalue("milvus_server_uri")
    archive = str(tmp_path / "archive")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ARCMATCH_ARCHIVE_URI": archive,
           "ARCMATCH_AUDIT_DIR": str(tmp_path / "audit")}
    # the job in a process of its own (to be killed), a driver on the test's Ray rather than a Ray of its own
    # (seconds to start instead of tens); the steps around it in this process (a server, unlike a Lite file, has
    # no one process that holds it)
    env["RAY_ADDRESS"] = ray_local.get_runtime_context().gcs_address
    ingest(root, tiny_model_dir, milvus=uri, gallery=collection_name, index_type="FLAT", archive=archive,
           errors_csv=tmp_path / "e.csv", console=Console(quiet=True, interactive=False))
    command = [sys.executable, "-m", "jobs.cli", "reembed", "--model", str(other_model_dir), "--milvus", uri,
               "--gallery", collection_name, "--batch-size", "8", "--grace", "0", "--index", "FLAT",
               "--errors", str(tmp_path / "reembed.csv")]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                           start_new_session=True)
    said = []
    for line in job.stderr:  # progress lines: "reembed: 64/400 ..., 56 written (...)"
        said.append(line)
        if line.startswith("reembed: ") and " written" in line and int(line.split(", ")[-1].split()[0]) > 0:
            break
    os.killpg(job.pid, signal.SIGKILL)  # the whole job, without warning
    job.wait(timeout=120)
    assert job.returncode == -signal.SIGKILL, "".join(said)[-2000:]

    down = IdentityService.open(Settings(model=tiny_model_dir, milvus_uri=uri, gallery=collection_name,
                                         _env_file=None))
    assert down.ready()["in_service"]  # the kill left the alias where it was
    assert down.delete_identity("person_00003") == 10  # a delete while the job is down
    down.close()
    for name in ("ARCMATCH_ARCHIVE_URI", "ARCMATCH_AUDIT_DIR"):
        monkeypatch.setenv(name, env[name])
    code, out, err = cli_here(capsys, *command[3:])
    assert code == 0, err[-2000:]
    assert "already there from an earlier run" in out, out
    client = connect(uri)
    galleries = Galleries(client, collection_name)
    new = FaceIndex(client, galleries.target())
    ids = list(new.iter_ids())
    assert len(ids) == len(set(ids)) == 90 and new.faces_of("person_00003") == []
    assert len(galleries.collections()) == 2 and new.info().threshold == 0.6
    client.close()


@pytest.mark.slow
def test_a_new_model_started_before_the_switch_writes_into_its_collection_and_loses_nothing(
        ray_local, tmp_path, tiny_model_dir, other_model_dir):
    """The rolling order for a deployment: fill B (--no-switch), start B's replicas (they search B and write to
    it, the archive carrying their writes), run the re-embed again to catch up and switch."""
    uri, gallery, archive = str(tmp_path / "g.db"), "faces", tmp_path / "archive"
    old = IdentityService.open(settings(tiny_model_dir, uri, gallery, archive), create=True)
    old.enroll("ann", [("a.png", png(1))])
    first = reembed(str(other_model_dir), milvus=uri, gallery=gallery, archive=str(archive), switch=False,
                    index_type="FLAT")
    assert not first.switched and first.in_target == 1
    new = IdentityService.open(settings(other_model_dir, uri, gallery, archive))
    assert not new.ready()["in_service"]
    bob = new.enroll("bob", [("b.png", png(2))]).face_ids[0]  # the new model's replica, before the switch
    old.enroll("cat", [("c.png", png(3))])  # ... and the old model's, still in service
    second = reembed(str(other_model_dir), milvus=uri, gallery=gallery, archive=str(archive), grace_s=0,
                     index_type="FLAT")
    assert second.switched and second.already_there == 1
    names = {r["identity"] for name in ("ann", "bob", "cat") for r in new.index.faces_of(name)}
    assert names == {"ann", "bob", "cat"} and new.index.faces_of("bob")[0]["id"] == bob
    galleries = Galleries(new.index.client, gallery)
    # bob was only ever in B
    with pytest.raises(FacesAtStake, match=r"takes out of service, or (back )?to another name, 1 face\(s\)"):
        galleries.rollback()
    assert galleries.rollback(lose=1) == first.source
    new.ready(max_age_s=0)
    with pytest.raises(GalleryMoved):  # rolled back: the migration is closed, B takes no writes
        new.enroll("dan", [("d.png", png(4))])
    for service in (old, new):
        service.close()


@pytest.mark.slow
def test_an_upgrade_that_would_lose_faces_refuses_to_switch_and_says_which(ray_local, tmp_path, tiny_model_dir,
                                                                          tiny_spec, monkeypatch, capsys):
    """The CLI as a user runs it: photos archived for a box-crop model, a five-point model and no detector. The
    dry run and the run agree on every face, the run exits non-zero, the alias stays, the CSV names the faces.
    Each step is `arcmatch`'s own entry point in this process (tests/helpers.py, cli_here)."""
    import csv
    from dataclasses import replace
    from functools import partial

    from indexer.store import FaceIndex
    from tests.helpers import untrained_model
    from trainer.synthetic import write_dataset

    root, uri, archive = tmp_path / "gallery", str(tmp_path / "g.db"), str(tmp_path / "archive")
    write_dataset(root, range(5), 3, size=32)
    five_point = untrained_model(tmp_path / "five-point", replace(tiny_spec, alignment="five_point"), seed=2,
                                 threshold=0.6)
    monkeypatch.delenv("ARCMATCH_DETECTOR", raising=False)
    monkeypatch.setenv("ARCMATCH_ARCHIVE_URI", archive)
    arcmatch = partial(cli_here, capsys)

    made = arcmatch("ingest", str(root), "--model", str(tiny_model_dir), "--milvus", uri, "--index", "FLAT",
                    "--errors", str(tmp_path / "ingest.csv"))
    assert made[0] == 0, made[2][-2000:]
    flags = ["reembed", "--model", str(five_point), "--milvus", uri, "--grace", "0", "--index", "FLAT"]

    code, out, err = arcmatch(*flags, "--dry-run", "--errors", str(tmp_path / "dry.csv"))
    assert code == 3, err[-2000:]  # finished, with faces it cannot embed
    assert "would embed 0, cannot embed 15" in out and "the switch would leave behind 15" in out
    code, out, err = arcmatch(*flags, "--errors", str(tmp_path / "run.csv"))
    assert code == 6, err[-2000:]  # Conflict
    assert err.strip().splitlines()[-1].startswith("arcmatch reembed: conflict: the switch is refused: 15 face")
    assert "no face detector is configured" in out and "left behind 15" in out
    rows = [list(csv.reader(open(tmp_path / name))) for name in ("dry.csv", "run.csv")]
    assert rows[0] == rows[1] and rows[0][0] == ["face_id", "identity", "source", "reason"] and len(rows[0]) == 16
    client = connect(uri)
    galleries = Galleries(client, "faces")
    served = galleries.serving()
    [other] = [c.name for c in galleries.collections() if c.name != served]
    assert FaceIndex(client, served).count() == 15 and FaceIndex(client, other).count() == 0  # nothing switched
    client.close()
