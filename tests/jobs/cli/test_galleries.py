"""`arcmatch galleries list|create|delete` on a Milvus Lite store: galleries apart, made empty for a model, and
erased only when told how many faces that erases."""

from indexer.calibration import target_fpir
from indexer.galleries import Galleries
from indexer.store import CollectionInfo, FaceIndex, connect
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
