"""The threshold a search uses (jobs/lookup.py): a stored one that is no cosine is an error that says what to do,
never a gallery that answers every search "unknown" without a word."""

from __future__ import annotations

import pytest

from embedder.errors import ModelError
from embedder.layout import Calibration
from indexer.store import CollectionInfo, FaceIndex, connect
from jobs.lookup import Lookup

pytestmark = pytest.mark.stores("lite")


@pytest.mark.parametrize(("stored", "model", "says"), [
    (5.0, None, "the collection's threshold 5.0 is not a cosine"),  # kept before thresholds were checked
    (0.4, Calibration(-3.0, 1e-3, 1e-3, 0.9, 100), "the model's threshold -3.0 is not a cosine"),  # edited by hand
], ids=["collection", "model"])
def test_a_stored_threshold_that_is_no_cosine_is_refused_in_words(milvus_uri, collection_name, stored, model, says):
    index = FaceIndex(connect(milvus_uri), collection_name)
    index.ensure(CollectionInfo("model-a", 8, stored), index_type="FLAT")
    lookup = Lookup(index, 8, model)
    with pytest.raises(ModelError, match=says + ".*arcmatch calibrate"):
        lookup.threshold()
    assert lookup.threshold(0.5) == 0.5  # a caller's own threshold still answers


def test_a_good_stored_threshold_is_used_and_said_where_it_comes_from(milvus_uri, collection_name):
    index = FaceIndex(connect(milvus_uri), collection_name)
    index.ensure(CollectionInfo("model-a", 8, 0.42), index_type="FLAT")
    assert Lookup(index, 8, None).threshold_in_use() == (0.42, "collection")
    assert Lookup(index, 8, Calibration(0.37, 1e-3, 1e-3, 0.9, 100)).threshold_in_use() == (0.37, "model")


def test_enrollment_into_the_gallery_of_an_uncalibrated_model_is_not_judged_by_a_threshold_nobody_set(
        milvus_uri, collection_name):
    import numpy as np

    from common.errors import Conflict
    from indexer.store import FaceRow

    index = FaceIndex(connect(milvus_uri), collection_name)
    index.ensure(CollectionInfo("model-a", 8, None), index_type="FLAT")
    face = np.eye(8, dtype=np.float32)[:1]
    index.upsert([FaceRow("a.png", "ann", face[0], 1)])
    index.flush()
    unset = Lookup(index, 8, None)
    assert not unset.has_threshold()
    unset.check_conflicts(face, "anne")  # nothing to judge by: the gallery is calibrated from its faces later
    with pytest.raises(ModelError, match="no calibrated threshold"):
        unset.threshold()
    with pytest.raises(ModelError, match=r"arcmatch calibrate --gallery shop` \(POST /v1/galleries/shop/calib"):
        Lookup(index, 8, None, gallery="shop").threshold()  # the gallery it is, not the service's default
    with pytest.raises(Conflict, match="'ann'"):
        Lookup(index, 8, Calibration(0.37, 1e-3, 1e-3, 0.9, 100)).check_conflicts(face, "anne")
    # stored faces to be named (a cluster): every one that matches is named, so the rest can go in alone
    with pytest.raises(Conflict, match=r"1 of these 2 faces match someone else at the threshold 0.370 \(face 11: "
                                       r"'ann' at 1.000\): leave them out"):
        Lookup(index, 8, Calibration(0.37, 1e-3, 1e-3, 0.9, 100)).check_faces(np.eye(8, dtype=np.float32)[:2],
                                                                              [11, 12], "anne")
