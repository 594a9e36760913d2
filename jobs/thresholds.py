"""A model's threshold for a false-positive identification rate (FPIR) in a gallery that is not built yet.

Why here: the trials are the indexer's (indexer.calibration.held_out_trials), the pairs and the Calibration record
the embedder's, and only jobs/ joins the two. The demo and `arcmatch eval --fpir` both call this, so a threshold
"for FPIR 2% in galleries of 50 x 3" means the same thing wherever it is chosen. Once the gallery exists,
`arcmatch calibrate` reads the same kind of trials from its own faces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from embedder.evaluation import Verification, calibrate_vectors
from embedder.layout import Calibration
from indexer.calibration import held_out_trials


def with_reference(calibration: Calibration, vectors: np.ndarray, labels: np.ndarray,
                   seed: int = 0) -> tuple[Calibration, str]:
    """The calibration with the tail reference of these held-out identities (indexer/reference.py), which small
    galleries' calibrations then take as a second opinion, and a line that says what was kept."""
    from indexer.reference import MIN_REFERENCE, REFERENCE_BELOW, TailReference

    reference = TailReference.measure(vectors, labels, seed)
    if reference is None:
        return replace(calibration, tail_reference=None), (
            f"no tail reference: {len(np.unique(labels))} held-out identities, {MIN_REFERENCE} needed (galleries "
            f"under {REFERENCE_BELOW} people then calibrate from their own tail alone)")
    return replace(calibration, tail_reference=reference.to_dict()), (
        f"tail reference: {reference.identities} held-out identities, one face each, kept for the calibration of "
        f"galleries under {REFERENCE_BELOW} people")


@dataclass(frozen=True)
class FpirThreshold:
    verification: Verification
    calibration: Calibration  # target_fpir and trials set; the pairs' FAR and TAR at the threshold
    rank1: float  # enrolled photos identified at the threshold in the mock galleries: what to expect
    scores: tuple[np.ndarray, np.ndarray]  # the balanced pairs' (scores, same), for a ROC curve
    held_out: tuple[np.ndarray, np.ndarray]  # the vectors and labels it was chosen on (with_reference)


def fpir_threshold(vectors: np.ndarray, labels: np.ndarray, target_fpir: float, *, gallery_identities: int,
                   photos: int, seed: int = 0) -> FpirThreshold:
    """The threshold that lets `target_fpir` of strangers match someone in galleries of `gallery_identities` people
    with `photos` photos each, made from these held-out identities (unit vectors and their labels)."""
    trials = held_out_trials(vectors, labels, gallery_identities=gallery_identities, photos=photos, seed=seed)
    threshold = trials.threshold_for(target_fpir)
    verification, pairs, scores = calibrate_vectors(vectors, labels, None, seed, threshold=threshold)
    return FpirThreshold(verification, replace(pairs, target_fpir=target_fpir, trials=len(trials.nonmated)),
                         1.0 - trials.rates(threshold).fnir, scores, (vectors, labels))
