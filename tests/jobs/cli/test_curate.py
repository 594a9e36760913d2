"""`arcmatch calibrate` (report, keep, show, clear) and `arcmatch cluster` / `clusters` on a Milvus Lite gallery."""

import json

import pytest

from indexer.calibration import stored
from indexer.galleries import Galleries
from indexer.store import CollectionInfo, FaceIndex, connect
from jobs.cli import main
from tests.helpers import people

DIM = 16


@pytest.fixture
def gallery(tmp_path, monkeypatch):
    uri = str(tmp_path / "g.db")
    monkeypatch.setenv("ARCMATCH_MILVUS_URI", uri)
    monkeypatch.setenv("ARCMATCH_GALLERY", "crowd")
    monkeypatch.setenv("ARCMATCH_AUDIT_DIR", str(tmp_path / "audit"))
    client = connect(uri)
    index = FaceIndex(client, "crowd")
    index.ensure(CollectionInfo("model-a", DIM, 0.2), index_type="FLAT")
    index.upsert(people(80, 2, spread=1.0))
    index.flush()
    yield index
    client.close()


def tiny_model_gallery(tmp_path, monkeypatch, model_dir, gallery: str, rows=(), archive: str | None = None) -> str:
    """A gallery of the suite's tiny model with its owner enrolled and `rows` written as they are, the ARCMATCH_*
    variables the CLI reads pointing at it (the face archive at `archive`, off without one); its Milvus Lite URI."""
    from jobs.service import IdentityService
    from jobs.settings import Settings
    from tests.helpers import png

    uri = str(tmp_path / f"{gallery}.db")
    env = {"MILVUS_URI": uri, "GALLERY": gallery, "MODEL": str(model_dir), "AUDIT_DIR": str(tmp_path / "audit"),
           **({"ARCHIVE_URI": archive} if archive else {"ARCHIVE": "false"})}
    for name, value in env.items():
        monkeypatch.setenv(f"ARCMATCH_{name}", value)
    service = IdentityService.open(Settings(), create=True)
    service.enroll("owner", [("o.png", png(99))])
    if rows:
        service.index.upsert(list(rows))
        service.index.flush()
    service.close()
    return uri


def test_calibrate_reports_keeps_shows_and_clears(gallery, capsys, tmp_path):
    assert main(["calibrate", "--fpir", "0.05", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["method"].startswith("gallery cross-identity scores")  # the default: the modelled tail
    assert dry["fpir"] <= 0.05 + 1e-6 and dry["nonmated_trials"] == 160 and dry["model_threshold"] == 0.2
    assert dry["at_model_threshold"]["fpir"] > dry["fpir"]
    assert stored(gallery) is None

    assert main(["calibrate", "--fpir", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "chosen for FPIR 0.05" in out and "searches use it" in out
    assert "    0.2000  " in out and "the model's own threshold" in out and "for twice the target" in out
    assert stored(gallery).threshold == pytest.approx(dry["threshold"])
    audit = "".join(p.read_text() for p in (tmp_path / "audit").rglob("*") if p.is_file())
    assert '"action": "calibrate"' in audit or '"action":"calibrate"' in audit

    assert main(["calibrate", "--show", "--plot", str(tmp_path / "curve.png")]) == 0
    shown = capsys.readouterr().out
    assert f"> {dry['threshold']:8.4f}" in shown and "when calibrated" not in shown
    assert shown.splitlines()[0] == f"{gallery.collection}:"  # as the run says whose threshold it is
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gallery.upsert(people(320, 1, spread=1.0, seed=7, first=1000))  # the gallery grows fivefold
    assert main(["calibrate", "--show", "--fpir", "0.001", "--dry-run"]) == 2  # flags --show would not use
    assert "--fpir and --dry-run are for a calibration run, not --show" in capsys.readouterr().err
    assert main(["calibrate", "--show"]) == 0
    grown = capsys.readouterr().out
    assert "the gallery has 400 identities, 80 when calibrated" in grown
    assert "no longer meets its target: run `arcmatch calibrate` again" in grown
    assert main(["calibrate", "--clear"]) == 0
    assert stored(gallery) is None and "model's threshold 0.2000 applies" in capsys.readouterr().out


def test_calibrate_says_what_is_wrong_in_one_line(gallery, capsys):
    assert main(["calibrate", "--fpir", "0.001", "--method", "top1"]) == 2
    assert "needs at least 1000 unknown-person trials" in capsys.readouterr().err
    assert main(["calibrate", "--fpir", "0.001", "--dry-run"]) == 0  # the tail extrapolates, and says how far
    assert "the interval is wide: at 80 identities the gallery cannot tell FPIR 0.001" in capsys.readouterr().out
    assert main(["calibrate", "--gallery", "nobody"]) == 4
    assert main(["calibrate", "--target", "crowd__other"]) == 4


def test_cluster_then_list_and_show_clusters(gallery, capsys, tmp_path, monkeypatch, ray_local):
    from indexer.ids import UNLABELLED
    from indexer.store import FaceRow

    monkeypatch.setenv("ARCMATCH_ARCHIVE_URI", str(tmp_path / "archive"))
    rows = people(5, 3, spread=0.2, seed=4, first=50)
    gallery.upsert([FaceRow(r.source, UNLABELLED, r.vector, r.face_id) for r in rows])
    gallery.flush()
    assert main(["cluster", "--k", "5", "--threshold", "0.6", "--export", str(tmp_path / "c.parquet")]) == 0
    out = capsys.readouterr().out
    assert "15 unlabelled faces" in out and "5 clusters of two faces or more" in out
    assert main(["clusters", "list"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert len(listed) == 6 and "3 faces" in listed[0] and listed[-1].startswith("(5 of 5 clusters")
    first = listed[0].split("\t")[0]
    assert main(["clusters", "show", first]) == 0
    shown = capsys.readouterr().out.strip().splitlines()
    assert shown[0].startswith(f"cluster {first}: 3 faces") and len(shown) == 4
    sources = {r.face_id: r.source for r in rows}
    assert all(sources[int(line.split("\t")[0])] == line.split("\t")[1] for line in shown[1:])  # the photo of each
    assert main(["clusters", "show", "999999"]) == 4


def test_clusters_name_makes_a_cluster_someone_s(tmp_path, monkeypatch, capsys, tiny_model_dir):
    from indexer.ids import UNLABELLED
    from indexer.store import FaceRow
    from jobs.audit import read
    from jobs.pipelines.cluster import cluster
    from tests.helpers import TINY_DIM

    crowd = [FaceRow(r.source, UNLABELLED, r.vector, r.face_id)
             for r in people(3, 3, spread=0.2, seed=4, first=50, dim=TINY_DIM)]
    uri = tiny_model_gallery(tmp_path, monkeypatch, tiny_model_dir, "crowd", crowd, str(tmp_path / "archive"))
    cluster(milvus=uri, root=str(tmp_path / "archive"), gallery="crowd", k=4, threshold=0.6)
    assert main(["clusters", "list"]) == 0
    first, *_, members = capsys.readouterr().out.splitlines()[0].split("\t")
    assert members.startswith("members ")

    assert main(["clusters", "name", first, "Ann Lee", "--members", "0123456789abcdef"]) == 6  # other faces now
    assert "holds other faces than when you looked" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # a count, not a slice
        main(["clusters", "list", "--limit", "-1"])
    assert refused.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    assert main(["clusters", "name", first]) == 2  # no name: one line
    assert "needs a cluster id and a name" in capsys.readouterr().err
    assert main(["clusters", "name", first, "Ann Lee", "--members", members.split()[1]]) == 0
    assert f"3 face(s) of cluster {first} named 'Ann Lee'" in capsys.readouterr().out
    client = connect(uri)
    faces = [f for f, name in FaceIndex(client, Galleries(client, "crowd").serving()).labelled_faces()
             if name == "Ann Lee"]
    client.close()
    assert len(faces) == 3
    assert [r["action"] for r in read(tmp_path / "audit")] == ["promote"]
    assert main(["clusters", "name", "999999", "Bob"]) == 4  # no such cluster: not found


def test_gallery_check_names_a_duplicate_and_a_mislabelled_photo(tmp_path, monkeypatch, capsys):
    """One person enrolled twice under two names, one photo of person 3 filed under person 5."""
    import numpy as np

    from indexer.ids import face_id
    from indexer.store import FaceRow

    uri = str(tmp_path / "h.db")
    monkeypatch.setenv("ARCMATCH_MILVUS_URI", uri)
    monkeypatch.setenv("ARCMATCH_GALLERY", "health")
    rows = people(60, 2, spread=0.3, dim=64)
    twin = rows[14].vector + 0.05 * np.random.default_rng(1).normal(size=64).astype(np.float32)
    rows.append(FaceRow("twin", "person 7 again", twin / np.linalg.norm(twin), face_id("twin")))
    stray = rows[6]  # person 3's first photo ...
    rows[6] = FaceRow(stray.source, "person 5", stray.vector, stray.face_id)  # ... filed under person 5
    client = connect(uri)
    index = FaceIndex(client, "health")
    index.ensure(CollectionInfo("model-a", 64, 0.5), index_type="FLAT")
    index.upsert(rows)
    index.flush()
    client.close()

    assert main(["gallery", "check", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["identities"], found["faces"]) == (61, 121)
    pairs = [(d["first"], d["second"]) for d in found["duplicates"]]
    # the most extreme first: the twins, then the two the stray photo joins; chance look-alikes of 1,830 pairs
    # may follow (listed where fewer than one such pair is expected among strangers)
    assert set(pairs[:2]) == {("person 7", "person 7 again"), ("person 3", "person 5")}
    assert all(d["expected_among_strangers"] < 1 for d in found["duplicates"])
    assert [(m["face_id"], m["identity"], m["other"], m["source"]) for m in found["misfits"]][0] == \
        (str(stray.face_id), "person 5", "person 3", stray.source)  # a string, as the API says it
    assert found["below_gate"] == []  # nothing was judged: no detector records
    assert main(["gallery", "check"]) == 0
    said = capsys.readouterr().out
    assert "'person 7' and 'person 7 again'" in said
    assert f"face {stray.face_id} ({stray.source}) of 'person 5'" in said  # the photo to look at, by its file


def test_gallery_merge_move_reject_and_distinct_resolve_the_findings(tmp_path, monkeypatch, capsys,
                                                                      tiny_model_dir):
    from jobs.audit import read
    from tests.jobs.api.test_gallery_health import planted_gallery

    planted = planted_gallery(tiny_model_gallery(tmp_path, monkeypatch, tiny_model_dir, "fix"), "fix")

    assert main(["gallery", "distinct", "person 7", "person 7 again"]) == 0
    assert "are different people (1 such pair(s) kept)" in capsys.readouterr().out
    assert main(["gallery", "move", planted["stray"], "--from", "person 5", "--to", "persn 3"]) == 4  # a typo
    assert "no identity 'persn 3' in the gallery" in capsys.readouterr().err
    assert main(["gallery", "move", planted["stray"], "--from", "person 5", "--to", "person 3"]) == 0
    assert f"face {planted['stray']} is now under 'person 3'" in capsys.readouterr().out
    assert main(["gallery", "merge", "person 9", "person 8"]) == 6  # no face alike: asks first
    assert "they look like two people" in capsys.readouterr().err
    assert main(["gallery", "merge", "person 9", "person 8", "--proceed"]) == 0
    assert "2 faces of 'person 8' are now under 'person 9'" in capsys.readouterr().out
    assert main(["gallery", "check"]) == 0
    [line] = [n for n in capsys.readouterr().out.splitlines() if f"face {planted['outsider']} (" in n]
    assert ") of 'person 20'" in line  # like no one else of theirs, named with its file
    assert main(["gallery", "confirm", planted["outsider"], "--in", "person 20"]) == 0  # "it is them": said once
    assert main(["gallery", "check"]) == 0
    assert "photos that look like no one else of their identity: 0" in capsys.readouterr().out
    assert main(["gallery", "reject", planted["outsider"], "--from", "person 20"]) == 0
    assert f"face {planted['outsider']} is not 'person 20'" in capsys.readouterr().out
    assert main(["gallery", "check", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["strays"] == []
    pairs = {(d["first"], d["second"]) for d in found["duplicates"]}
    assert found["identities"] == 41 and ("person 7", "person 7 again") not in pairs
    assert planted["stray"] not in {str(m["face_id"]) for m in found["misfits"]}
    assert [r["action"] for r in read(tmp_path / "audit")] == ["distinct", "move_face", "merge_identity",
                                                                "confirm_face", "reject_face"]
    assert main(["gallery", "merge", "person 9", "nobody"]) == 4  # not found: one line, nothing changed
    assert "no identity 'nobody'" in capsys.readouterr().err
    assert main(["gallery", "merge", "person 7", "person 7 again"]) == 6  # said to be two people: asks first
    assert "were said to be different people: say proceed" in capsys.readouterr().err
    assert main(["gallery", "merge", "person 7", "person 7 again", "--proceed"]) == 0
    assert main(["gallery", "distinct", "person 7", "person 9"]) == 0
    assert "(1 such pair(s) kept)" in capsys.readouterr().out  # the merged pair is kept no more


def test_gallery_name_makes_unlabelled_faces_someone_s_by_source(tmp_path, monkeypatch, capsys, tiny_model_dir):
    from indexer.ids import UNLABELLED, face_id
    from indexer.store import FaceRow
    from jobs.audit import read
    from tests.helpers import TINY_DIM

    staff = [FaceRow(f"event/{n}.jpg", UNLABELLED, r.vector, face_id(f"event/{n}.jpg"))
             for n, r in enumerate(people(2, 1, spread=0.3, seed=3, first=700, dim=TINY_DIM))]
    uri = tiny_model_gallery(tmp_path, monkeypatch, tiny_model_dir, "named", staff)

    assert main(["gallery", "name", "Ann Lee", "event/0.jpg", "elsewhere.jpg"]) == 4  # one line, nothing named
    assert "no unlabelled face comes from 'elsewhere.jpg': nothing named" in capsys.readouterr().err
    assert main(["gallery", "name", "Ann Lee", "event/0.jpg"]) == 0
    assert "1 face(s) named 'Ann Lee'" in capsys.readouterr().out
    client = connect(uri)
    rows = FaceIndex(client, "named").rows([r.face_id for r in staff])
    client.close()
    assert [rows[r.face_id].identity for r in staff] == ["Ann Lee", UNLABELLED]
    assert [r["action"] for r in read(tmp_path / "audit")] == ["name_faces"]


def test_gallery_stranger_confirms_unlabelled_faces_by_source(gallery, capsys, tmp_path):
    from indexer.ids import UNLABELLED, face_id
    from indexer.store import FaceRow
    from jobs.audit import read

    rows = [FaceRow(f"visitors/{n}.jpg", UNLABELLED, r.vector, face_id(f"visitors/{n}.jpg"))
            for n, r in enumerate(people(3, 1, spread=0.3, seed=9, first=500))]
    gallery.upsert(rows)
    gallery.flush()
    # this crowd scores 0.2 (the collection's threshold) with someone often: searches would answer them as someone
    assert main(["gallery", "stranger", "visitors/0.jpg", "visitors/2.jpg", "--proceed"]) == 0
    assert "2 unlabelled face(s) confirmed as strangers" in capsys.readouterr().out
    marks = gallery.stored_metadata([r.face_id for r in rows])
    assert [marks[r.face_id].get("stranger") for r in rows] == [True, None, True]
    assert main(["gallery", "stranger", "visitors/1.jpg", "elsewhere.jpg"]) == 4  # one line, nothing marked
    assert "no unlabelled face comes from 'elsewhere.jpg'" in capsys.readouterr().err
    assert gallery.stored_metadata([rows[1].face_id])[rows[1].face_id] == {}
    assert [r["action"] for r in read(tmp_path / "audit")] == ["confirm_strangers"]
    # an enrolled person's photo among them: searches answer it as that person, so it is no stranger without a word
    person = people(1, 1, spread=1.0, seed=0)[0]
    gallery.upsert([FaceRow("visitors/3.jpg", UNLABELLED, person.vector, face_id("visitors/3.jpg"))])
    gallery.flush()
    assert main(["gallery", "stranger", "visitors/1.jpg", "visitors/3.jpg"]) == 6
    said = capsys.readouterr().err
    assert "match someone enrolled at or above the threshold 0.200 (" in said
    assert "visitors/3.jpg: 'person 0' at 1.000" in said and "nothing marked" in said
    assert gallery.stored_metadata([rows[1].face_id])[rows[1].face_id] == {}  # nothing marked
    assert main(["gallery", "stranger", "visitors/1.jpg", "visitors/3.jpg", "--proceed"]) == 0


def test_gallery_stranger_kept_confirms_every_face_kept_from_searches(gallery, capsys, tmp_path):
    from indexer.ids import UNLABELLED, face_id
    from indexer.store import FaceRow
    from jobs.audit import read

    vectors = [r.vector for r in people(3, 1, spread=0.3, seed=9, first=500)]
    search = {"expires_at": 2_000_000_000, "below": 0.5}  # kept from a search, answered unknown below 0.5
    kept = [FaceRow(f"search:{n:016x}#0", UNLABELLED, v, face_id(f"k{n}"), search) for n, v in enumerate(vectors[:2])]
    ingested = FaceRow("visitors/0.jpg", UNLABELLED, vectors[2], face_id("visitors/0.jpg"))
    gallery.upsert([*kept, ingested])
    gallery.flush()
    assert main(["gallery", "stranger", "--kept", "visitors/0.jpg"]) == 2  # one or the other
    assert main(["gallery", "stranger"]) == 2
    assert "give the sources of unlabelled faces, or --kept" in capsys.readouterr().err
    assert main(["gallery", "stranger", "--kept"]) == 0
    assert "2 face(s) kept from searches confirmed as strangers (0 before)" in capsys.readouterr().out
    marks = gallery.stored_metadata([r.face_id for r in [*kept, ingested]])
    assert [marks[r.face_id].get("stranger") for r in [*kept, ingested]] == [True, True, None]
    assert main(["gallery", "stranger", "--kept"]) == 0
    assert "no face kept from searches left to confirm (2 confirmed before)" in capsys.readouterr().out
    assert [(r["action"], r.get("kept")) for r in read(tmp_path / "audit")] == [("confirm_strangers", True)] * 2


def test_calibrate_takes_the_tail_reference_its_model_kept_after_the_gallery_was_made(tmp_path, monkeypatch,
                                                                                       tiny_model_dir, capsys):
    """The gallery was made before `eval --calibrate` kept the model's tail reference: `calibrate --model` (or
    ARCMATCH_MODEL) gives it to the gallery's record, and the small gallery's calibration takes its opinion."""
    import shutil
    from dataclasses import replace

    import numpy as np

    from embedder.layout import Calibration
    from indexer.reference import TailReference

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    tiny_model_gallery(tmp_path, monkeypatch, model, "late", rows=people(100, 1, spread=0.3, dim=64))
    held = people(300, 1, spread=0.3, dim=64, seed=7, first=1000)
    reference = TailReference.measure(np.stack([r.vector for r in held]), np.array([r.identity for r in held]))
    replace(Calibration.load(model), tail_reference=reference.to_dict()).save(model)  # eval --calibrate, since
    monkeypatch.delenv("ARCMATCH_MODEL")
    assert main(["calibrate", "--fpir", "0.01", "--dry-run"]) == 0
    assert "a second opinion" not in capsys.readouterr().out  # no model named: the record has none
    assert main(["calibrate", "--fpir", "0.01", "--dry-run", "--model", str(model)]) == 0
    assert "a second opinion, the tail of the model's 300 held-out identities" in capsys.readouterr().out
    assert main(["calibrate", "--fpir", "0.01", "--dry-run"]) == 0  # kept in the record from then on
    assert "a second opinion" in capsys.readouterr().out
