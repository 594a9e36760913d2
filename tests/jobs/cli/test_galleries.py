"""`arcmatch galleries list|create|delete` on a Milvus Lite store: galleries apart, made empty for a model, and
erased only when told how many faces that erases."""

from indexer import calibration
from indexer.calibration import target_fpir
from indexer.galleries import Galleries
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect
from jobs.audit import read
from jobs.cli import main
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.helpers import TINY_DIM, people, png


def test_galleries_are_listed_made_and_erased_only_when_the_count_is_confirmed(tmp_path, monkeypatch, capsys,
                                                                              tiny_model_dir):
    uri = str(tmp_path / "many.db")
    for name, value in {"MILVUS_URI": uri, "MODEL": str(tiny_model_dir), "AUDIT_DIR": str(tmp_path / "audit"),
                        "ARCHIVE_URI": str(tmp_path / "archive")}.items():
        monkeypatch.setenv(f"ARCMATCH_{name}", value)
    service = IdentityService.open(Settings(gallery="staff"), create=True)
    service.enroll("ann", [("a.png", png(1)), ("b.png", png(1, 1))])
    service.close()

    assert main(["galleries", "create", "visitors", "--fpir", "0.05"]) == 0
    assert "created gallery 'visitors'" in capsys.readouterr().out
    client = connect(uri)
    index = FaceIndex(client, Galleries(client, "visitors").serving())
    assert target_fpir(index) == 0.05  # what its calibrations aim at when none is named
    client.close()
    assert main(["galleries", "create", "visitors"]) == 6  # a conflict: it exists
    assert main(["galleries", "create", "bad__name"]) == 2
    capsys.readouterr()
    assert main(["galleries", "list"]) == 0
    listed = dict(line.split("\t", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert set(listed) == {"staff", "visitors"} and "faces 2" in listed["staff"] and "faces 0" in listed["visitors"]
    assert "not calibrated (its target FPIR 0.05)" in listed["visitors"]  # a target is no calibration

    assert (tmp_path / "archive" / "staff").is_dir()
    assert main(["galleries", "delete", "staff"]) == 2  # faces in it: refused, nothing erased
    err = capsys.readouterr().err
    assert "holds 2 faces (2 archived images, 1 collections)" in err and "--erase 2" in err
    assert main(["galleries", "delete", "staff", "--erase", "3"]) == 2  # a count that is not the gallery's
    assert main(["galleries", "delete", "visitors"]) == 0  # empty: nothing to lose
    assert main(["galleries", "delete", "staff", "--erase", "2"]) == 0
    assert "erased gallery 'staff': 2 faces, 2 archived images" in capsys.readouterr().out
    assert main(["galleries", "delete", "staff", "--erase", "2"]) == 4  # gone
    assert not (tmp_path / "archive" / "staff").exists()

    client = connect(uri)  # a gallery whose alias is gone: the faces of its collections still count
    Galleries(client, "orphan").prepare(CollectionInfo("model-x", TINY_DIM), index_type="FLAT").upsert(
        people(3, 1, spread=0.1, dim=TINY_DIM))
    client.close()
    assert main(["galleries", "delete", "orphan"]) == 2 and "--erase 3" in capsys.readouterr().err
    assert main(["galleries", "delete", "orphan", "--erase", "3"]) == 0
    assert "erased gallery 'orphan': 3 faces" in capsys.readouterr().out
    assert main(["galleries", "list"]) == 0 and capsys.readouterr().out == ""
    actions = [(r["action"], r.get("gallery")) for r in read(tmp_path / "audit")]
    assert ("gallery_create", "visitors") in actions and ("gallery_delete", "staff") in actions


def test_a_switch_rollback_or_drop_that_loses_faces_is_refused_until_their_number_is_told(tmp_path, monkeypatch,
                                                                                          capsys):
    for name, value in {"MILVUS_URI": str(tmp_path / "two.db"), "GALLERY": "staff",
                        "AUDIT_DIR": str(tmp_path / "audit"), "ARCHIVE_URI": str(tmp_path / "archive")}.items():
        monkeypatch.setenv(f"ARCMATCH_{name}", value)
    client = connect(str(tmp_path / "two.db"))
    galleries = Galleries(client, "staff")
    a = galleries.open(CollectionInfo("model-a", TINY_DIM, 0.5), create=True, index_type="FLAT")
    a.upsert(people(2, 1, spread=0.1, dim=TINY_DIM))  # person 0 and person 1
    b = galleries.prepare(CollectionInfo("model-b", TINY_DIM, 0.5), index_type="FLAT")
    b.upsert(people(1, 1, spread=0.1, dim=TINY_DIM))  # person 0 only, and no archive to bring person 1 back
    client.close()

    assert main(["alias", "switch", b.collection]) == 6
    assert "to another name, 1 face(s)" in capsys.readouterr().err
    assert main(["alias", "switch", b.collection, "--lose", "1"]) == 0
    assert main(["collections", "drop", a.collection]) == 6  # person 1 is only there
    said = capsys.readouterr().err
    assert "loses 1 face(s)" in said and "repeat with --lose 1" in said
    client = connect(str(tmp_path / "two.db"))  # person 0 named otherwise since the switch (a merge, say)
    [row] = FaceIndex(client, b.collection).rows(list(FaceIndex(client, b.collection).iter_ids())).values()
    FaceIndex(client, b.collection).upsert([FaceRow(row.source, "person 0 renamed", row.vector, row.face_id)])
    client.close()
    assert main(["alias", "rollback"]) == 6  # going back undoes that name: counted as a face lost
    assert "back to another name, 1 face(s)" in capsys.readouterr().err
    assert main(["alias", "rollback", "--lose", "1"]) == 0
    assert main(["collections", "drop", b.collection]) == 0
    client = connect(str(tmp_path / "two.db"))
    c = Galleries(client, "staff").prepare(CollectionInfo("model-c", TINY_DIM, 0.5), index_type="FLAT")
    c.upsert(people(2, 1, spread=0.1, dim=TINY_DIM))  # the same two faces: A can go
    client.close()
    assert main(["alias", "switch", c.collection]) == 0 and main(["collections", "drop", a.collection]) == 0
    capsys.readouterr()
    assert main(["collections", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"(previous: {a.collection}, dropped: no rollback)" in listed and "threshold 0.5000 (the model's)" in listed
    c_index = FaceIndex(connect(str(tmp_path / "two.db")), c.collection)
    c_index.upsert(people(60, 1, spread=0.1, dim=TINY_DIM, first=100))
    c_index.flush()
    calibration.store(c_index, calibration.calibrate(c_index, 0.05, model_threshold=0.5, method="top1"))
    c_index.client.close()
    assert main(["collections", "list"]) == 0  # the threshold a search takes first is the one listed
    assert "(the gallery's calibration; the model's 0.5000)" in capsys.readouterr().out
    assert main(["collections", "list", "--gallery", "nobody"]) == 4
    assert main(["alias", "show", "--gallery", "nobody"]) == 4
    assert main(["archive", "stats", "--gallery", "nobody"]) == 4
    assert main(["alias", "show"]) == 0 and main(["archive", "stats"]) == 0
    assert [r["action"] for r in read(tmp_path / "audit")] == ["alias_switch", "alias_rollback", "collection_drop",
                                                               "alias_switch", "collection_drop"]
