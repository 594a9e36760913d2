"""Unlabelled faces as more strangers for the tail calibration: those kept from searches are read only once
confirmed, below the threshold they were answered under, and those that look like someone enrolled are dropped."""

import numpy as np
import pytest

from common.errors import NotFound
from indexer.ids import UNLABELLED, face_id
from indexer.store import FaceRow
from indexer.strangers import confirm, confirm_kept, fit_with_strangers, ingested_unlabelled, kept_strangers
from indexer.writer import GalleryWriter
from tests.helpers import people

pytestmark = pytest.mark.stores("lite")  # the calibration's logic; the store's contract holds on both


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def test_strangers_that_look_enrolled_are_dropped_and_the_others_kept():
    rows = people(60, 1, spread=0.3, dim=64)
    vectors, labels = np.stack([r.vector for r in rows]), np.array([r.identity for r in rows])
    others = np.stack([r.vector for r in people(300, 1, spread=0.3, dim=64, seed=5)])
    rng = np.random.default_rng(2)
    enrolled_again = unit(vectors[:10] + 0.05 * rng.normal(size=(10, 64)))  # staff in the event's photos
    strangers = np.vstack([others, enrolled_again])
    model, evidence, _, own, dropped = fit_with_strangers(vectors, labels, np.arange(60), frozenset(), strangers)
    assert dropped.sum() == 10 and dropped[300:].all()
    assert (own < 0).sum() == 300 and len(evidence) == 360


def test_many_enrolled_photos_among_the_strangers_are_still_dropped():
    """A twentieth of the unlabelled faces are the enrolled's own photos: judged by a tail fitted with them in it,
    they widened it until none looked enrolled (none of these 25 was dropped), and the threshold then kept out the
    enrolled too. Judged by the gallery's own faces, they are found."""
    rows = people(100, 1, spread=0.3, dim=64)
    vectors, labels = np.stack([r.vector for r in rows]), np.array([r.identity for r in rows])
    others = np.stack([r.vector for r in people(475, 1, spread=0.3, dim=64, seed=50)])
    staff = unit(vectors[:25] + 0.1 * np.random.default_rng(1).normal(size=(25, 64)))  # about 0.78 to their own
    _, _, _, own, dropped = fit_with_strangers(vectors, labels, np.arange(100), frozenset(), np.vstack([others, staff]))
    assert dropped[475:].all() and dropped[:475].sum() <= 5
    assert (own < 0).sum() == 500 - dropped.sum()
    # a person took the first of them out of the identity it looks like ("not this person"): a look-alike, kept
    said = [frozenset()] * 475 + [frozenset({str(labels[0])})] + [frozenset({"someone else"})] * 24
    kept = fit_with_strangers(vectors, labels, np.arange(100), frozenset(), np.vstack([others, staff]),
                              rejected=said)[4]
    assert not kept[475] and kept[476:].all()


def test_confirmed_strangers_are_never_dropped_and_enough_of_them_give_the_rate_themselves():
    """Faces their owner confirmed are nobody enrolled (`ingest --strangers`) stay, even one that looks enrolled,
    and from MIN_DIRECT of them the FPIR at the gallery's size is their own share crossing; the model carries it
    to other sizes."""
    from indexer.tail import DIRECT_TAIL, MIN_DIRECT, directly

    rows = people(100, 1, spread=0.3, dim=64)
    vectors, labels = np.stack([r.vector for r in rows]), np.array([r.identity for r in rows])
    others = np.stack([r.vector for r in people(MIN_DIRECT, 1, spread=0.3, dim=64, seed=50)])
    alike = unit(vectors[:1] + 0.1 * np.random.default_rng(1).normal(size=(1, 64)))
    strangers = np.vstack([others, alike])
    everyone = np.ones(len(strangers), bool)
    assert fit_with_strangers(vectors, labels, np.arange(100), frozenset(), strangers)[4][-1]
    model, evidence, _, own, dropped = fit_with_strangers(vectors, labels, np.arange(100), frozenset(), strangers,
                                                          confirmed=everyone)
    assert not dropped.any() and (own < 0).sum() == MIN_DIRECT + 1
    read, said = directly(model, evidence, own, everyone)
    assert said is not None and said["direct"] and said["strangers"] == MIN_DIRECT + 1
    best = np.sort((strangers @ vectors.T).max(axis=1))
    for t in best[-DIRECT_TAIL - 1 :: -40]:  # counted where they are dense: exactly their share
        assert read.fpir(float(t)) == pytest.approx(np.mean(best >= t), abs=1e-6)
    beyond = float(best[-5])
    assert 0 < read.fpir(beyond) < read.fpir(beyond, size=1000) < 1
    few = everyone.copy()
    few[:2] = False  # MIN_DIRECT - 1 confirmed: the model's own reading stays
    assert directly(model, evidence, own, few) == (model, None)


@pytest.fixture
def index(new_collection):
    return new_collection(16, 0.3)


def test_faces_kept_from_searches_are_not_strangers_and_confirmed_ones_are_told_apart(index):
    rows = [FaceRow(f"u{n}", UNLABELLED, r.vector, face_id(f"u{n}"),
                    {"expires_at": 2_000_000_000} if n % 2 else {"stranger": True} if n % 4 == 0 else {})
            for n, r in enumerate(people(20, 1, spread=0.3, seed=3))]
    index.upsert(rows + people(5, 1, spread=0.3))
    index.flush()
    found = ingested_unlabelled(index, np.random.default_rng(0))
    kept = {tuple(np.round(r.vector, 5)) for n, r in enumerate(rows) if n % 2 == 0}
    assert len(found.vectors) == 10 and {tuple(np.round(v, 5)) for v in found.vectors} == kept
    marked = {tuple(np.round(r.vector, 5)) for n, r in enumerate(rows) if n % 4 == 0}
    assert {tuple(np.round(v, 5)) for v in found.vectors[found.confirmed]} == marked
    assert sorted(found.sources) == sorted(f"u{n}" for n in range(0, 20, 2))


def test_enough_unlabelled_faces_scale_the_calibration_and_it_says_by_how_much(index):
    """From MIN_STRANGERS unlabelled faces on, their own best scores scale the modelled rates (tail.clustered); the
    calibration keeps what they were read from and prints it."""
    from indexer.calibration import calibrate
    from indexer.tail import MIN_STRANGERS

    strangers = [FaceRow(f"u{n}", UNLABELLED, r.vector, face_id(f"u{n}"))
                 for n, r in enumerate(people(MIN_STRANGERS + 20, 1, spread=0.3, seed=7, first=1000))]
    index.upsert(people(40, 2, spread=0.3) + strangers)
    index.flush()
    result = calibrate(index, 0.05, sample=80)
    check = result.strangers_check
    assert result.strangers == MIN_STRANGERS + 20 and check is not None
    assert check["strangers"] == MIN_STRANGERS + 20
    assert check["factor"] == pytest.approx(check["observed"] / check["modelled"])
    assert any(f"scaled by {check['factor']:.2f}" in line for line in result.lines())


def test_a_few_unlabelled_faces_are_counted_and_the_calibration_says_more_would_do_more(index):
    from indexer.calibration import calibrate
    from indexer.tail import MIN_STRANGERS

    strangers = [FaceRow(f"u{n}", UNLABELLED, r.vector, face_id(f"u{n}"))
                 for n, r in enumerate(people(30, 1, spread=0.3, seed=7, first=1000))]
    index.upsert(people(40, 2, spread=0.3) + strangers)
    index.flush()
    result = calibrate(index, 0.05, sample=80)
    assert result.strangers == 30 and result.strangers_check is None
    assert any(f"from {MIN_STRANGERS} on, the rates would follow" in line for line in result.lines())


def test_confirmed_strangers_give_the_calibration_its_rate_and_it_says_so(index):
    from indexer.calibration import calibrate
    from indexer.tail import MIN_DIRECT

    strangers = [FaceRow(f"u{n}", UNLABELLED, r.vector, face_id(f"u{n}"), {"stranger": True})
                 for n, r in enumerate(people(MIN_DIRECT + 20, 1, spread=0.3, seed=7, first=1000))]
    index.upsert(people(40, 2, spread=0.3) + strangers)
    index.flush()
    result = calibrate(index, 0.01, sample=80)
    check = result.strangers_check
    assert result.strangers == MIN_DIRECT + 20 and result.strangers_dropped == 0
    assert check is not None and check["direct"] and check["confirmed"] == MIN_DIRECT + 20
    assert any(f"read off the {MIN_DIRECT + 20} confirmed strangers" in line for line in result.lines())
    assert any(f"{MIN_DIRECT + 20} unlabelled faces counted as strangers too, {MIN_DIRECT + 20} of them confirmed"
               in line for line in result.lines())
    assert result.strict_target_hint() is None  # 520 confirmed strangers are 5 crossings at 1%
    strict = calibrate(index, 0.001, sample=80)
    hint = strict.strict_target_hint()
    assert "needs about 2000 confirmed strangers (`ingest --strangers`: 2 of them crossing at it), " \
           f"{MIN_DIRECT + 20} here" in hint
    assert hint in strict.lines()


def test_faces_left_out_as_looking_enrolled_are_listed_and_a_person_can_confirm_them(new_collection):
    """The calibration names where each face it left out came from and whom it looks like; `confirm` marks the
    ones a person knows are strangers, and the next calibration keeps them."""
    from indexer.calibration import calibrate

    index = new_collection(64, 0.3)  # people apart enough for an enrolled person's photo to stand out
    enrolled = people(40, 2, spread=0.3, dim=64)
    staff = [FaceRow(f"event/{n}.jpg", UNLABELLED, r.vector, face_id(f"event/{n}.jpg"))  # enrolled people's photos
             for n, r in enumerate(enrolled[:6:2])]
    others = [FaceRow(f"u{n}", UNLABELLED, r.vector, face_id(f"u{n}"))
              for n, r in enumerate(people(150, 1, spread=0.3, seed=7, first=1000, dim=64))]
    index.upsert(enrolled + staff + others)
    index.flush()
    first = calibrate(index, 0.05, sample=80)
    aside = {f["source"]: f for f in first.strangers_set_aside}
    assert first.strangers_dropped >= 3 and {"event/0.jpg", "event/1.jpg", "event/2.jpg"} <= set(aside)
    assert aside["event/1.jpg"]["like"] == enrolled[2].identity and aside["event/1.jpg"]["score"] > 0.99
    assert any("left out as looking enrolled: " in line and "event/" in line for line in first.lines())
    with pytest.raises(NotFound, match="'nowhere.jpg'"):
        confirm(GalleryWriter(index), ["event/0.jpg", "nowhere.jpg"])
    assert index.stored_metadata([staff[0].face_id])[staff[0].face_id] == {}  # nothing marked
    assert confirm(GalleryWriter(index), ["event/0.jpg"]) == [staff[0].face_id]
    assert index.stored_metadata([staff[0].face_id])[staff[0].face_id] == {"stranger": True}
    again = calibrate(index, 0.05, sample=80)
    assert "event/0.jpg" not in {f["source"] for f in again.strangers_set_aside}
    assert again.strangers_dropped == first.strangers_dropped - 1


def test_kept_faces_confirmed_are_read_below_their_cut_and_only_where_few_were_ingested(index):
    """Faces kept from searches (metadata `expires_at`, `below`) are strangers only once a person says so
    (`gallery stranger --kept`, after naming the enrolled among them); then a calibration with too few ingested
    unlabelled faces reads them with their cut, the threshold most were answered unknown under. Left out, and
    said: those past their retention, those answered under another model or a laxer threshold."""
    from indexer.calibration import calibrate
    from indexer.tail import MIN_STRANGERS

    index.upsert(people(40, 2, spread=0.3))
    index.flush()
    model = index.info().model_version
    enrolled = np.stack([r.vector for r in people(40, 2, spread=0.3)])
    searched = [r.vector for r in people(MIN_STRANGERS + 60, 1, spread=0.3, seed=7, first=1000)]
    best = np.max(np.stack(searched) @ enrolled.T, axis=1)
    cut = float(np.quantile(best, 0.97))
    below = [v for v, b in zip(searched, best, strict=True) if b < cut][: MIN_STRANGERS + 40]
    # most answered under the service's threshold; some under a caller's stricter one, some under a laxer one
    # (their searches' faces between it and the cut were never kept), some under the model before a re-embed,
    # some past their retention
    under = [cut + 0.02 if n % 10 == 0 else cut - 0.05 if n % 10 == 5 else cut for n in range(len(below))]
    meta = [{"expires_at": 100 if n % 20 == 7 else 2_000_000_000, "below": t,
             "below_model": "another/1" if n % 20 == 3 else model} for n, t in enumerate(under)]
    kept = [FaceRow(f"search:{n:016x}#0", UNLABELLED, v, face_id(f"search{n}"), m)
            for n, (v, m) in enumerate(zip(below, meta, strict=True))]
    read = [r for r, m in zip(kept, meta, strict=True) if m["below"] >= cut and m["expires_at"] > 1000
            and m["below_model"] == model]
    ingested = [FaceRow(f"u{n}", UNLABELLED, r.vector, face_id(f"u{n}"))
                for n, r in enumerate(people(3, 1, spread=0.3, seed=9, first=3000))]
    index.upsert(kept + ingested)
    index.flush()
    assert len(kept_strangers(index, np.random.default_rng(0)).vectors) == 0  # nobody confirmed them yet
    waiting = calibrate(index, 0.05, sample=80)
    assert waiting.strangers == 3 and waiting.kept_faces["unconfirmed"] == len(kept) - 7
    assert any(f"{len(kept) - 7} faces kept from searches wait to be judged" in line for line in waiting.lines())
    nearest = waiting.kept_nearest  # where the people a threshold missed would be: the most like someone first
    assert len(nearest) == 20 and all(f["source"].startswith("search:") for f in nearest)
    assert [f["score"] for f in nearest] == sorted((f["score"] for f in nearest), reverse=True)
    alive = [v for v, m in zip(below, meta, strict=True) if m["expires_at"] > 1000]
    assert nearest[0]["score"] == pytest.approx(float(np.max(np.stack(alive) @ enrolled.T)), abs=1e-4)
    assert all(f["like"].startswith("person ") for f in nearest)
    assert any(line.startswith("the most like someone enrolled: search:") for line in waiting.lines())
    marked, before = confirm_kept(GalleryWriter(index))
    alive = sorted(r.face_id for r, m in zip(kept, meta, strict=True) if m["expires_at"] > 1000)
    assert (marked, before) == (alive, 0) and confirm_kept(GalleryWriter(index)) == ([], len(alive))
    assert [f for f, m in index.stored_metadata([r.face_id for r in ingested]).items() if m] == []  # untouched
    found = kept_strangers(index, np.random.default_rng(0))
    assert sorted(found.face_ids) == sorted(r.face_id for r in read) and found.confirmed.all()
    assert found.cut == pytest.approx(cut, abs=1e-6)
    assert found.counts == {"kept": len(kept), "expired": 7, "unconfirmed": 0, "other_model": 7,
                            "laxer": len(kept) - 14 - len(read), "confirmed": len(read)}
    assert len(ingested_unlabelled(index, np.random.default_rng(0)).vectors) == 3
    result = calibrate(index, 0.05, sample=80)
    check = result.strangers_check
    assert result.strangers == len(read) and check is not None and check["cut"] == pytest.approx(cut, abs=1e-6)
    assert check["beyond"] > 0 and check["threshold"] < cut and result.kept_faces["read"]
    lines = "\n".join(result.lines())
    assert f"{len(read)} faces kept from searches counted as strangers too" in lines
    assert f"answered unknown below {cut:.4f}" in lines and "answered under a laxer threshold" in lines
    assert "left out: 7 past their retention, 7 answered under another model" in lines


def test_kept_faces_do_not_crowd_ingested_ones_out_of_the_draw(index):
    """Told apart by their source before the draw: thousands kept from searches leave the ingested ones whole."""
    from indexer.strangers import STRANGERS

    rows = [FaceRow(f"search:{n:016x}#0", UNLABELLED, r.vector, face_id(f"k{n}"), {"expires_at": 2_000_000_000,
                                                                                   "below": 0.9})
            for n, r in enumerate(people(2 * STRANGERS + 200, 1, spread=0.3, seed=4, first=5000))]
    ingested = [FaceRow(f"walk-ins/{n}.jpg", UNLABELLED, r.vector, face_id(f"w{n}"))
                for n, r in enumerate(people(50, 1, spread=0.3, seed=5, first=9000))]
    index.upsert(rows + ingested)
    index.flush()
    assert len(ingested_unlabelled(index, np.random.default_rng(0)).vectors) == 50
