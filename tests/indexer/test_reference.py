"""A model's tail reference (indexer/reference.py): kept and read back, and in a small gallery's calibration the
stricter of two opinions, the gallery's own tail and the reference's shape beyond it, so a reference of another
kind of photo can make a threshold stricter but never looser."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.calibration import calibrate
from indexer.reference import MIN_REFERENCE, POWERS, Stricter, TailReference
from indexer.store import CollectionInfo, FaceIndex, FaceRow
from indexer.tail import fit_gallery
from jobs.thresholds import with_reference
from tests.helpers import people

DIM = 24

pytestmark = pytest.mark.stores("lite")


def plain(n: int, seed: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One face each of `n` people scattered evenly: a light tail."""
    rows = people(n, 1, spread=0.3, seed=seed, first=first, dim=DIM)
    return np.stack([r.vector for r in rows]), np.array([r.identity for r in rows])


def families(n: int, seed: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One face each of `n` people in families of three who look alike: a heavy tail of close strangers."""
    rng = np.random.default_rng(seed)
    centres = np.repeat(rng.normal(size=(n // 3 + 1, DIM)), 3, axis=0)[:n] + 0.75 * rng.normal(size=(n, DIM))
    vectors = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    return vectors.astype(np.float32), np.array([f"person {first + i}" for i in range(n)])


def test_a_reference_is_kept_at_every_power_and_read_back():
    vectors, labels = plain(300, seed=1)
    reference = TailReference.measure(vectors, labels)
    assert reference.identities == 300 and [t["power"] for t in reference.tables] == list(POWERS)
    assert TailReference.from_dict(reference.to_dict()) == reference
    assert TailReference.from_dict(None) is None and TailReference.from_dict({"tables": 3}) is None
    z = np.linspace(-1, 12, 200)
    for power in (0.0, 0.3, 0.6, 1.0):
        s = reference.survival(z, power)
        assert np.all(np.diff(s) <= 1e-12) and s[0] <= 1 and s[-1] < 1e-3  # falls, far out to almost nothing
    between = reference.survival(np.asarray(4.0), 0.6)
    assert min(reference.survival(np.asarray(4.0), p) for p in (0.5, 0.75)) <= between <= \
        max(reference.survival(np.asarray(4.0), p) for p in (0.5, 0.75))
    assert TailReference.measure(*plain(MIN_REFERENCE - 1, seed=2)) is None  # too few to know a tail far out


def test_the_stricter_of_two_opinions_a_heavier_reference_raises_a_lighter_one_leaves_alone():
    gallery, names = plain(100, seed=3)
    own = fit_gallery(gallery, names)[0]
    heavy = TailReference.measure(*families(600, seed=4, first=1000))
    light = TailReference.measure(*plain(600, seed=5, first=1000))
    raised = Stricter(own, heavy)
    assert raised.threshold_for(0.01) > own.threshold_for(0.01) + 0.01
    kept = Stricter(own, light)
    assert kept.threshold_for(0.01) >= own.threshold_for(0.01) - 1e-9
    for t in np.linspace(0.2, 0.9, 15):  # never looser than the gallery's own, at any threshold
        assert raised.fpir(t) >= own.fpir(t) and kept.fpir(t) >= own.fpir(t)
    said = raised.opinions(0.01)
    assert said["identities"] == 600 and said["reference_threshold"] > said["own_threshold"]


def stored_gallery(milvus_uri: str, name: str, reference: dict | None) -> FaceIndex:
    from indexer.store import connect

    index = FaceIndex(connect(milvus_uri), name)
    index.ensure(CollectionInfo("model-a", DIM, 0.3, None, reference), index_type="FLAT")
    vectors, labels = plain(100, seed=3)
    index.upsert([FaceRow(f"f{i}", str(n), v, i + 1) for i, (v, n) in enumerate(zip(vectors, labels, strict=True))])
    return index


def test_a_small_gallery_alone_takes_the_models_reference_and_says_both_thresholds(milvus_uri, collection_name):
    heavy = TailReference.measure(*families(600, seed=4, first=1000)).to_dict()
    index = stored_gallery(milvus_uri, collection_name, heavy)
    found = calibrate(index, 0.01)
    said = found.reference
    assert said["identities"] == 600 and said["reference_threshold"] > said["own_threshold"] + 0.01
    assert found.threshold == pytest.approx(said["reference_threshold"], abs=2e-3)  # the stricter opinion holds
    assert "a second opinion, the tail of the model's 600 held-out identities" in "\n".join(found.lines())
    assert "which lends its tail" not in "\n".join(found.lines())  # it has one
    low, high = found.fpir_interval
    assert low <= found.fpir <= high


def test_without_a_reference_or_from_its_size_on_the_gallerys_own_tail_decides(milvus_uri, collection_name,
                                                                               monkeypatch):
    import indexer.gallery_tail

    assert calibrate(stored_gallery(milvus_uri, collection_name + "_none", None), 0.01).reference is None
    heavy = TailReference.measure(*families(600, seed=4, first=1000)).to_dict()
    index = stored_gallery(milvus_uri, collection_name, heavy)
    monkeypatch.setattr(indexer.gallery_tail, "REFERENCE_BELOW", 100)  # as if the gallery were large enough
    alone = calibrate(index, 0.01)
    assert alone.reference is None
    monkeypatch.undo()
    assert calibrate(index, 0.01).threshold > alone.threshold + 0.01


def test_a_collection_made_before_its_model_was_evaluated_takes_the_reference_when_opened_again(
        milvus_uri, collection_name):
    from indexer.store import connect

    index = stored_gallery(milvus_uri, collection_name, None)
    assert index.info().reference is None
    reference = TailReference.measure(*plain(300, seed=1)).to_dict()
    again = FaceIndex(connect(milvus_uri), collection_name)
    again.ensure(CollectionInfo("model-a", DIM, 0.3, None, reference))
    assert FaceIndex(connect(milvus_uri), collection_name).info().reference == reference
    again.ensure(CollectionInfo("model-a", DIM, 0.3, None, None))  # a model without one takes nothing away
    assert FaceIndex(connect(milvus_uri), collection_name).info().reference == reference


def test_an_evaluation_keeps_a_reference_from_enough_held_out_identities():
    from embedder.layout import Calibration

    base = Calibration(0.4, 1e-3, 1e-3, 0.9, 1000)
    kept, said = with_reference(base, *plain(250, seed=6))
    assert kept.tail_reference["identities"] == 250 and kept.threshold == 0.4
    assert said.startswith("tail reference: 250 held-out identities")
    none, said = with_reference(base, *plain(50, seed=6))
    assert none.tail_reference is None and "50 held-out identities, 200 needed" in said
