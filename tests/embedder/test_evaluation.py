import numpy as np
import pytest

from common.errors import BadInput
from embedder.evaluation import (
    best_threshold,
    calibrate_vectors,
    identity_interval,
    kfold_accuracy,
    pair_scores,
    sample_pairs,
    threshold_at_far,
)


def test_threshold_at_far_accepts_no_more_impostors_than_asked():
    rng = np.random.default_rng(0)
    impostor = rng.normal(0.0, 0.1, 10_000)
    genuine = rng.normal(0.6, 0.1, 1_000)
    scores = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(1_000, bool), np.zeros(10_000, bool)])
    threshold, far, tar = threshold_at_far(scores, same, 1e-3)
    assert far <= 1e-3
    assert (impostor >= threshold).mean() == pytest.approx(far)
    assert (genuine >= threshold).mean() == pytest.approx(tar)
    assert 0.25 < threshold < 0.4  # about 3.1 sigma of the impostor distribution


def test_kfold_accuracy_separable_and_random():
    same = np.arange(200) % 2 == 0
    separable = kfold_accuracy(np.where(same, 0.8, 0.1), same, np.arange(200) % 10)
    assert separable.accuracy_mean == 1.0 and separable.auc == 1.0 and separable.folds == 10
    noise = kfold_accuracy(np.random.default_rng(0).random(200), same, np.arange(200) % 10)
    assert noise.accuracy_mean < 0.65


def test_best_threshold_splits_the_classes():
    scores = np.array([0.1, 0.2, 0.7, 0.9])
    assert 0.2 < best_threshold(scores, np.array([False, False, True, True])) < 0.7


def test_sample_pairs_are_labelled_right_and_unique():
    labels = np.repeat(np.arange(10), 4)
    pairs, same = sample_pairs(labels, 30, 50, np.random.default_rng(0))
    assert same.sum() == 30 and (~same).sum() == 50
    assert (labels[pairs[:, 0]] == labels[pairs[:, 1]]).tolist() == same.tolist()
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == len(pairs)
    vectors = np.eye(40, dtype=np.float32)
    assert (pair_scores(vectors, pairs) == 0).all()


def test_tar_only_where_the_data_resolves_the_far(tmp_path):
    from embedder.evaluation import plot_roc, tar_at_far

    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(0.7, 0.1, 500), rng.normal(0.1, 0.1, 2000)])
    same = np.arange(2500) < 500
    tars = tar_at_far(scores, same)
    assert set(tars) == {1e-2}  # 2,000 impostors resolve 1e-2, not 1e-3
    assert 0.9 < tars[1e-2] <= 1.0
    png = plot_roc(scores, same, tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_identity_interval_resamples_people_not_photos():
    # 50 people with 10 photos each; 10 people fail on every photo: the misses come in whole identities
    identities = np.repeat([f"p{i}" for i in range(50)], 10)
    hits = np.repeat(np.arange(50) >= 10, 10)
    low, high = identity_interval(hits, identities)
    assert low < 0.8 < high and high - low > 0.15  # a binomial interval over 500 photos would be ~0.07 wide
    shuffled = np.random.default_rng(0).permutation(hits)  # the same misses spread over everyone
    low_spread, high_spread = identity_interval(shuffled, identities)
    assert high_spread - low_spread < (high - low) / 1.5
    assert identity_interval(hits, identities) == (low, high)  # seeded
    assert identity_interval(np.ones(500, bool), identities) == (1.0, 1.0)


def test_identity_interval_needs_one_identity_per_probe():
    with pytest.raises(BadInput, match="one identity per probe"):
        identity_interval(np.ones(3, bool), ["a", "b"])


def test_calibration_at_a_given_threshold_measures_the_pairs_there():
    """A threshold chosen elsewhere (for an FPIR: jobs/pipelines/demo.py) keeps the verification figures and gets
    the pairs' FAR and TAR at it; at the threshold the FAR rule chose, both ways agree."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 8))
    labels = np.repeat(np.arange(40), 5).astype(str)
    vectors = centres[np.repeat(np.arange(40), 5)] + 0.6 * rng.normal(size=(200, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    by_far = calibrate_vectors(vectors, labels, 1e-2)
    at = calibrate_vectors(vectors, labels, None, threshold=by_far[1].threshold)
    assert at[0] == by_far[0] and at[1].target_far is None
    assert (at[1].measured_far, at[1].tar) == pytest.approx((by_far[1].measured_far, by_far[1].tar))
    higher = calibrate_vectors(vectors, labels, None, threshold=by_far[1].threshold + 0.1)[1]
    assert higher.measured_far <= at[1].measured_far and higher.tar < at[1].tar
    for far, threshold in ((None, None), (1e-2, 0.5)):
        with pytest.raises(BadInput):
            calibrate_vectors(vectors, labels, far, threshold=threshold)


@pytest.mark.parametrize(("labels", "same"), [(["a", "b", "c"], 0), (["a", "a", "a"], 3)],
                         ids=["one-photo-each", "one-person"])
def test_calibration_without_both_kinds_of_pair_says_what_the_data_lacks(labels, same):
    vectors = np.eye(3, dtype=np.float32)
    with pytest.raises(BadInput, match=f"the data gives 3 photo\\(s\\) of {len(set(labels))} identities, {same} "
                                       "same-person pair"):
        calibrate_vectors(vectors, np.asarray(labels), 1e-3)


def test_verification_on_a_small_held_out_set_weighs_both_kinds_of_pair_alike():
    """30 people with 4 photos give 180 same-person pairs: with 3,000 different-person pairs beside them, a model
    that knows nobody scored 94% by answering "different" always. The pairs are balanced, so it scores a coin's."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(30), 4).astype(str)
    vectors = rng.normal(size=(120, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    verification, _, (scores, same) = calibrate_vectors(vectors, labels, 1e-2)
    assert same.sum() == (~same).sum() == 180
    assert 0.4 < verification.accuracy_mean < 0.6
