"""The service in process (Milvus Lite): enrollments of one person under several names at once, and what a photo
enrolled again keeps."""

import threading
import time

import pytest

from common.errors import Conflict
from indexer import health, strangers
from indexer.ids import OWN_METADATA
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.helpers import png


@pytest.fixture
def service(tmp_path, tiny_model_dir):
    settings = Settings(model=tiny_model_dir, milvus_uri=str(tmp_path / "g.db"), gallery="race",
                        archive_uri=str(tmp_path / "archive"), audit_dir=str(tmp_path / "audit"),
                        recalibrate_on_growth=False)
    service = IdentityService.open(settings, create=True)
    yield service
    service.close()


def test_one_person_enrolled_under_several_names_at_once_is_enrolled_once(service):
    write = service.writer.write

    def slow_write(*args, **kwargs):  # widens the window between the conflict check and the write
        time.sleep(0.3)
        return write(*args, **kwargs)

    service.writer.write = slow_write
    start, outcomes = threading.Barrier(4), []

    def enroll(n: int) -> None:
        start.wait()
        try:
            outcomes.append(service.enroll(f"twin{n}", [(f"{n}.png", png(5, n))]).identity)
        except Conflict as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=enroll, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    enrolled = [o for o in outcomes if o.startswith("twin")]
    assert len(enrolled) == 1, outcomes
    assert all(f"matches {enrolled[0]!r}" in o for o in outcomes if o not in enrolled)
    assert [n for n, _ in service.list_identities(None, 10)[0]] == enrolled


def test_a_photo_enrolled_again_keeps_what_people_said_of_it(service):
    [face] = service.enroll("ann", [("a.png", png(1))], {"team": "blue"}).face_ids
    row = service.index.rows([face])[face]
    service.index.upsert([type(row)(row.source, row.identity, row.vector, face,
                                    {**row.metadata, health.CONFIRMED_IN: "ann"})])  # "It is ann", as curation keeps it
    assert service.enroll("ann", [("a.png", png(1))], {"seat": 4}).face_ids == [face]
    metadata = service.index.rows([face])[face].metadata
    assert metadata["team"] == "blue" and metadata["seat"] == 4 and metadata[health.CONFIRMED_IN] == "ann"
    before = service.archive.stats()
    assert service.enroll("ann", [("a.png", png(1))]).face_ids == [face]  # the same again: nothing new to keep
    assert service.archive.stats().parts == before.parts


def test_a_photo_the_identity_holds_already_under_another_file_is_that_face(service):
    """The same picture in other bytes (saved again; ingested from a folder, then enrolled from it) is answered
    with the face it already is, not stored twice; another photo of the person, or the same one under another
    name, is a face of its own."""
    import io

    from PIL import Image

    [face] = service.enroll("cat", [("c.png", png(7))]).face_ids
    saved_again = io.BytesIO()
    Image.open(io.BytesIO(png(7))).save(saved_again, "PNG", compress_level=0)
    assert saved_again.getvalue() != png(7)
    again = service.enroll("cat", [("copy of c.png", saved_again.getvalue()), ("c2.png", png(7, 1))]).face_ids
    assert again[0] == face and again[1] != face
    assert len(service.identity("cat")) == 2
    # the same picture under another name: one photo under two names, unless said; seen without a threshold's
    # conflict check too (a gallery of a model not calibrated yet)
    service.conflict_check = False
    try:
        with pytest.raises(Conflict, match=rf"copy of c.png: this photo is face {face} of 'cat' already"):
            service.enroll("cat twin", [("copy of c.png", saved_again.getvalue())])
    finally:
        service.conflict_check = True
    assert service.enroll("cat twin", [("c.png", png(7))], proceed=True).face_ids != [face]


def test_a_deleted_photo_enrolled_again_is_refused_unless_said(service):
    """A batch enrolled again after a person or a photo was deleted through the API brought them back; now each
    is a Conflict (proceed enrolls it again), as ingestion skips them."""
    dan = service.enroll("dan", [("d1.png", png(8)), ("d2.png", png(8, 1))]).face_ids
    assert service.delete_face("dan", dan[1])
    with pytest.raises(Conflict, match=r"d2.png: this photo's face was deleted from 'dan' \(on 20"):
        service.enroll("dan", [("d1.png", png(8)), ("d2.png", png(8, 1))])
    assert service.enroll("dan", [("d1.png", png(8))]).face_ids == [dan[0]]  # the one still there: as before
    assert service.delete_identity("dan") == 1
    with pytest.raises(Conflict, match="d1.png: this photo's face was deleted from 'dan'"):
        service.enroll("dan", [("d1.png", png(8))])
    assert service.enroll("dan", [("d1.png", png(8))], proceed=True).face_ids == [dan[0]]
    assert service.enroll("dan", [("d3.png", png(8, 2))]).face_ids  # a photo never deleted


def test_the_keys_arcmatch_writes_are_its_own():
    assert {health.CONFIRMED_IN, strangers.CONFIRMED, "rejected_from", "sha256", "face"} <= OWN_METADATA
