"""Gallery calibration: the threshold for a target FPIR from the stored vectors, checked against the same trials
computed by brute force in NumPy, on Milvus Lite and the server."""

import numpy as np
import pytest

from embedder.evaluation import calibrate_vectors
from indexer.calibration import TOP_K, GalleryCalibration, Trials, calibrate, held_out_trials, store, stored
from indexer.errors import InvalidValue
from indexer.ids import UNLABELLED, face_id
from indexer.store import FaceIndex, FaceRow
from tests.helpers import people

DIM = 16

pytestmark = pytest.mark.stores("lite")  # the calibration's logic; the store's contract holds on both


def brute_force(rows: list[FaceRow], threshold: float) -> tuple[float, float]:
    """FPIR and FNIR of the leave-one-identity-out trials of every face, from the full similarity matrix."""
    labelled = [r for r in rows if r.identity != UNLABELLED]
    v = np.stack([r.vector for r in labelled])
    names = np.array([r.identity for r in labelled])
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    same = names[:, None] == names[None, :]
    nonmated = np.where(same, -np.inf, sims).max(axis=1)
    several = same.sum(axis=1) >= 2  # diagonal included: another face of the same person exists
    top = sims.argmax(axis=1)
    found = (names[top] == names) & (sims[np.arange(len(v)), top] >= threshold)
    return float((nonmated >= threshold).mean()), float(1 - found[several].mean())


@pytest.fixture
def index(new_collection):
    return new_collection(DIM, 0.3)


def test_the_threshold_accepts_at_most_the_target_share_of_strangers():
    scores = np.linspace(0.0, 0.99, 100, dtype=np.float32)  # 100 non-mated trials
    trials = Trials(scores, np.array([True, True, False]), np.array([0.95, 0.5, 0.99], np.float32))
    t = trials.threshold_for(0.05)
    assert (scores >= t).sum() == 5 and (scores >= np.float32(scores[-6])).sum() == 6
    assert trials.rates(t).fpir == 0.05
    assert trials.rates(t).fnir == pytest.approx(2 / 3)  # the wrong rank-1 is a miss whatever its score
    assert trials.threshold_for(0.001) > scores.max()  # floor(0.1) = 0: no stranger accepted


def test_calibrate_matches_brute_force_and_is_stored_with_the_collection(index):
    rows = people(120, 3, spread=0.9) + people(40, 1, spread=0.9, seed=1, first=500)
    rows.append(FaceRow("nobody", UNLABELLED, rows[0].vector, face_id("nobody")))  # never a trial, never a hit
    index.upsert(rows)
    index.flush()
    result = calibrate(index, 0.05, model_threshold=0.3, method="top1")
    assert (result.identities, result.faces) == (160, 400)
    assert result.nonmated_trials == 400 and result.mated_trials == 360
    fpir, fnir = brute_force(rows, result.threshold)
    assert result.fpir == pytest.approx(fpir) and fpir <= 0.05
    assert result.fnir == pytest.approx(fnir)
    at_model = brute_force(rows, 0.3)
    assert (result.at_model_threshold.fpir, result.at_model_threshold.fnir) == pytest.approx(at_model)
    assert at_model[0] > 0.05  # the model's threshold lets more strangers through in this crowded domain

    assert stored(index) is None
    store(index, result)
    again = stored(FaceIndex(index.client, index.collection))
    assert again == result and isinstance(again, GalleryCalibration)
    store(index, None)
    assert stored(index) is None

    # a rate a search asks for: a share, and the range the curve answers said at the size asked
    with pytest.raises(InvalidValue, match=r"an FPIR is a share between 0 and 1 \(both excluded\), got 3"):
        result.threshold_for_fpir(3)  # was a TypeError from a complex power
    with pytest.raises(InvalidValue, match="at its 1600 identities, not 1e-05"):
        result.threshold_for_fpir(1e-5, 1600)


def test_an_identity_with_more_faces_than_k_still_gives_its_stranger_trial(index):
    crowd = people(1, TOP_K + 8, spread=0.05, seed=2)  # every one of its k nearest is its own
    rows = crowd + people(150, 1, spread=0.5, seed=3, first=10)
    index.upsert(rows)
    index.flush()
    result = calibrate(index, 0.01, method="top1")
    assert result.nonmated_trials == len(rows)
    assert result.fpir == pytest.approx(brute_force(rows, result.threshold)[0])


def test_too_small_a_gallery_for_the_target_is_refused(index):
    index.upsert(people(30, 2, spread=0.5))
    index.flush()
    with pytest.raises(InvalidValue, match="needs at least 1000 unknown-person trials"):
        calibrate(index, 0.001, method="top1")
    with pytest.raises(InvalidValue, match="a target FPIR is between 0.0001 and 0.5, got 1.5"):
        calibrate(index, 1.5)


def test_one_identity_cannot_be_calibrated(index):
    index.upsert(people(1, 5, spread=0.5))
    index.flush()
    with pytest.raises(InvalidValue, match="at least two identities"):
        calibrate(index, 0.1)


def vectors_of(rows: list[FaceRow]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([r.vector for r in rows]), np.array([r.identity for r in rows])


def test_held_out_trials_are_those_of_galleries_of_the_asked_shape():
    vectors, labels = vectors_of(people(30, 5, spread=0.3))
    trials = held_out_trials(vectors, labels, gallery_identities=10, photos=2, rounds=3)
    assert len(trials.nonmated) == 3 * 20 * 5  # every photo of the 20 others, each round
    assert len(trials.mated_right) == len(trials.mated_score) == 3 * 10 * 3  # the enrolled' other photos
    assert trials.mated_right.all()  # well-separated people: each probe's best face is its own person's
    assert trials.nonmated.max() < np.median(trials.mated_score)
    again = held_out_trials(vectors, labels, gallery_identities=10, photos=2, rounds=3)
    assert np.array_equal(trials.nonmated, again.nonmated)  # seeded


def test_a_threshold_from_held_out_trials_holds_its_fpir_on_a_new_gallery_where_the_union_bound_overshoots():
    """Calibrated on one crowd of people, applied to a gallery of others: the share of strangers accepted is near
    the target. The pair FAR x gallery faces threshold (the union bound) accepts a tenth of it: a stranger's scores
    against one person's photos rise and fall together, so the faces are not that many chances."""
    held_vectors, held_labels = vectors_of(people(300, 5, spread=0.3))
    trials = held_out_trials(held_vectors, held_labels, gallery_identities=40, photos=3, rounds=20)
    threshold = trials.threshold_for(0.05)
    new = people(440, 5, spread=0.3, seed=10, first=1000)
    gallery = np.stack([r.vector for r in new[: 40 * 5] if int(r.source.split("/f")[1]) < 3])
    strangers = np.stack([r.vector for r in new[40 * 5 :]])
    best = (strangers @ gallery.T).max(axis=1)
    assert 0.035 <= np.mean(best >= threshold) <= 0.065
    union = calibrate_vectors(held_vectors, held_labels, 0.05 / len(gallery))[1].threshold
    assert union > threshold and np.mean(best >= union) < 0.02


@pytest.mark.parametrize(("enrolled", "photos", "rounds"), [(0, 2, 1), (30, 2, 1), (10, 0, 1), (10, 2, 0)],
                         ids=["no-gallery", "no-strangers", "no-photos", "no-rounds"])
def test_held_out_trials_refuse_a_gallery_they_cannot_make(enrolled, photos, rounds):
    vectors, labels = vectors_of(people(30, 3, spread=0.3))
    with pytest.raises(InvalidValue):
        held_out_trials(vectors, labels, gallery_identities=enrolled, photos=photos, rounds=rounds)


def test_the_tail_method_sets_a_duplicate_enrollment_aside_names_it_and_keeps_its_threshold(index):
    rows = people(150, 1, spread=0.9)
    twin = rows[7].vector + 0.05 * np.random.default_rng(5).normal(size=DIM).astype(np.float32)
    rows.append(FaceRow("again", "person 7 again", twin / np.linalg.norm(twin), face_id("again")))
    index.upsert(rows)
    found = calibrate(index, 0.01, model_threshold=0.3, method="tail")
    assert [(s["first"], s["second"]) for s in found.suspects] == [("person 7", "person 7 again")]
    assert found.top1_threshold > 0.95 > found.threshold + 0.05  # the top-1 rule is decided by the pair; this is not
    from indexer.tail import fit_gallery

    clean, _, _, _ = fit_gallery(np.stack([r.vector for r in rows[:-1]]), np.array([r.identity for r in rows[:-1]]))
    assert found.threshold == pytest.approx(clean.threshold_for(0.01, size=151), abs=0.01)  # as if never enrolled
    low, high = found.fpir_interval
    assert low <= found.fpir <= high and found.fpir == pytest.approx(0.01, abs=0.002)
    check = found.tail_check  # the model against the gallery's own trials, where ten of them are above
    assert check["observed"] == pytest.approx(10 / 151) and check["modelled"] > 0
    store(index, found)
    again = stored(index)
    assert again.suspects == found.suspects and again.method == found.method and again.fpir_interval == [low, high]
    assert ("set aside, more alike than strangers are (one person under two names?): 1 pair(s): 'person 7' and "
            "'person 7 again'") in \
        "\n".join(again.lines())


def test_the_tail_method_refuses_a_gallery_too_small_to_model(index):
    index.upsert(people(12, 2, spread=0.9))
    with pytest.raises(InvalidValue, match="at least 20 identities; the gallery has 12.*--method top1"):
        calibrate(index, 0.05, method="tail")


def test_a_twenty_person_gallery_is_calibrated_with_its_wide_interval_said_plainly(index):
    index.upsert(people(20, 2, spread=0.9, dim=DIM))
    found = calibrate(index, 0.01)  # the default: the modelled tail
    low, high = found.fpir_interval
    assert found.identities == 20 and high > 2 * 0.01 and low <= found.fpir <= high
    said = "\n".join(found.lines())
    assert "the interval is wide: at 20 identities the gallery cannot tell FPIR 0.01 from" in said
    assert "unlabelled faces of people not enrolled" in said
    assert "(`arcmatch eval --calibrate`, then `calibrate --model`), which lends its tail" in said
    wide = next(i for i, line in enumerate(found.lines()) if line.startswith("the interval is wide"))
    assert max(map(len, found.lines()[wide:wide + 5])) < 160  # each remedy a line of its own
    assert found.top1_threshold is None and "top-1 rule" not in said  # 40 trials: `--method top1` refuses 0.01
    assert calibrate(index, 0.05).top1_threshold is not None  # 40 trials are enough for 1 in 20
    # a target the curve cannot read, which every search asking for it would then refuse, is refused here, in the
    # words the API's fields say
    with pytest.raises(InvalidValue, match="a target FPIR is between 0.0001 and 0.5, got 1e-06"):
        calibrate(index, 1e-6)
    with pytest.raises(InvalidValue, match="got 0.9"):
        calibrate(index, 0.9)
    with pytest.raises(InvalidValue, match="the sample is at least 50 faces"):
        calibrate(index, 0.05, sample=5)


def test_a_tail_model_that_does_not_fit_the_gallery_says_so():
    from dataclasses import replace

    base = GalleryCalibration(threshold=0.9, target_fpir=0.01, fpir=0.01, fnir=None, model_threshold=None,
                              at_model_threshold=None, identities=300, faces=300, nonmated_trials=300,
                              mated_trials=0, model_version="m", points=[{"label": "chosen", "threshold": 0.9,
                                                                         "fpir": 0.01, "fpir_low": 0.005,
                                                                         "fpir_high": 0.015, "fnir": None}])
    fits = replace(base, tail_check={"threshold": 0.85, "observed": 0.033, "modelled": 0.05})
    assert "does not fit" not in "\n".join(fits.lines())
    off = replace(base, tail_check={"threshold": 0.85, "observed": 0.033, "modelled": 0.1})
    assert "the tail model does not fit this gallery: at 0.8500 it predicts FPIR 0.100 where the gallery's own " \
           "faces give 0.033" in "\n".join(off.lines())
    refitted = replace(base, tail_check={"threshold": 0.85, "observed": 0.033, "modelled": 0.04,
                                         "modelled_before": 0.1, "spread_power": 0.12})
    said = "\n".join(refitted.lines())
    assert "does not fit" not in said
    assert "the tail model was refitted to this gallery's own faces: at 0.8500 it predicted FPIR 0.100 where they " \
           "give 0.033, now 0.040 (each face's own spread counts to the power 0.12)" in said


def test_the_fnir_is_said_to_read_high_where_people_have_two_faces():
    from dataclasses import replace

    point = {"label": "chosen", "threshold": 0.5, "fpir": 0.01, "fpir_low": 0.005, "fpir_high": 0.015, "fnir": 0.15}
    two = GalleryCalibration(threshold=0.5, target_fpir=0.01, fpir=0.01, fnir=0.15, model_threshold=None,
                             at_model_threshold=None, identities=300, faces=600, nonmated_trials=600,
                             mated_trials=600, model_version="m", points=[point])
    assert "FNIR reads high" in "\n".join(two.lines())
    five = replace(two, faces=1500, nonmated_trials=1500, mated_trials=1500)
    assert "FNIR reads high" not in "\n".join(five.lines())


def test_faces_named_from_searches_are_no_known_person_trials(index):
    """A face named from those a search kept was kept because a threshold missed it: as a known-person trial it
    would count that miss again. Here each person has two ordinary photos and one named from a search that looks
    like nobody: the misses are left out, and the known-person trials are the ordinary photos' own."""
    from dataclasses import replace

    plain = people(30, 2, spread=0.2, dim=16)
    rng = np.random.default_rng(5)
    odd = [FaceRow(f"search:{n:016x}#0", row.identity, (v := rng.normal(size=16)) / np.linalg.norm(v),
                   face_id(f"searched {n}")) for n, row in enumerate(plain[::2])]
    index.upsert(plain + [replace(r, vector=r.vector.astype(np.float32)) for r in odd])
    index.flush()
    result = calibrate(index, 0.05, sample=200, method="top1")
    assert result.mated_trials == 60 and result.fnir < 0.1  # 30 of 90 misses, counted, would read 1/3 or more
    assert result.nonmated_trials == 90


def test_the_top1_rule_says_why_it_lets_fewer_through_than_asked(index):
    """One person under two names gives the two highest trials, at one score: the top-1 rule cannot let one of them
    through without the other, so it lets none, and says so where its FPIR reads 0 for a target of 0.01."""
    rows = people(110, 1, spread=0.5, seed=4)
    twin = rows[0].vector
    index.upsert([*rows, FaceRow("twin", "person 0 again", twin, face_id("twin"))])
    index.flush()
    found = calibrate(index, 0.01, method="top1")
    assert found.fpir == 0.0
    assert "no threshold lets 1 of the 111 through and no more, so it lets 0" in "\n".join(found.lines())


def test_a_gallery_too_small_for_the_tail_is_offered_the_top1_rule_only_where_its_trials_show_the_target(index):
    index.upsert(people(5, 1, spread=0.5, seed=6))
    index.flush()
    with pytest.raises(InvalidValue, match="the gallery has 5: enroll more people$"):
        calibrate(index, 0.01)  # 5 trials tell no 1%
    with pytest.raises(InvalidValue, match=r"or use --method top1 \(the rate read off 5 trials\)"):
        calibrate(index, 0.3)
