"""Verification metrics and threshold calibration on pairs of embeddings.

Scores are cosine similarities: higher means "same person", and a pair is accepted when score >= threshold.
ROC computation is sklearn's; nothing here re-implements it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from embedder.checkpoint import Calibration
from embedder.embed import Embedder
from trainer.data import LabelledImage, decode_items


@dataclass(frozen=True)
class Verification:
    accuracy_mean: float
    accuracy_std: float
    auc: float
    folds: int


def pair_scores(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarity of each (i, j) row of `pairs`; embeddings must already be L2-normalised."""
    return np.einsum("ij,ij->i", embeddings[pairs[:, 0]], embeddings[pairs[:, 1]])


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (midpoint between neighbouring scores)."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    accuracy = [((scores >= t) == same).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> Verification:
    """LFW protocol: for each fold, choose the threshold on the other folds and measure accuracy on this one."""
    accuracies = []
    for fold in np.unique(folds):
        test = folds == fold
        threshold = best_threshold(scores[~test], same[~test])
        accuracies.append(((scores[test] >= threshold) == same[test]).mean())
    auc = roc_auc_score(same, scores) if 0 < same.sum() < len(same) else float("nan")
    return Verification(float(np.mean(accuracies)), float(np.std(accuracies)), float(auc), len(accuracies))


def threshold_at_far(scores: np.ndarray, same: np.ndarray, target_far: float) -> tuple[float, float, float]:
    """The lowest threshold whose false accept rate on these pairs is <= target_far: (threshold, far, tar)."""
    if same.all() or not same.any():
        raise ValueError("calibration needs both genuine and impostor pairs")
    fpr, tpr, thresholds = roc_curve(same, scores)
    ok = np.nonzero(fpr <= target_far)[0]
    i = ok[-1]
    threshold = float(min(thresholds[i], 1.0))
    return threshold, float(fpr[i]), float(tpr[i])


def sample_pairs(
    labels: np.ndarray, n_genuine: int, n_impostor: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to n_genuine same-label and n_impostor different-label index pairs, no pair twice: (pairs, same)."""
    genuine = [
        (i, j)
        for label in np.unique(labels)
        for members in [np.nonzero(labels == label)[0]]
        for a, i in enumerate(members)
        for j in members[a + 1 :]
    ]
    genuine = np.asarray(genuine, dtype=np.int64).reshape(-1, 2)
    if len(genuine) > n_genuine:
        genuine = genuine[rng.choice(len(genuine), n_genuine, replace=False)]
    impostor = rng.integers(0, len(labels), size=(n_impostor * 2 + 10, 2))
    impostor = impostor[labels[impostor[:, 0]] != labels[impostor[:, 1]]]
    impostor = np.unique(np.sort(impostor, axis=1), axis=0)
    impostor = impostor[rng.permutation(len(impostor))[:n_impostor]]
    pairs = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    return pairs, same


def calibrate(
    embedder: Embedder, items: list[LabelledImage], target_far: float, seed: int = 0
) -> tuple[Verification, Calibration]:
    """Embed held-out identities, then: 10-fold accuracy on balanced pairs, and the threshold at target_far.

    The threshold uses every impostor pair there is (up to 200k): a FAR of 1e-3 needs thousands to be resolved.
    """
    data = decode_items(items, embedder.spec)
    vectors = embedder.embed(data.images)
    rng = np.random.default_rng(seed)
    pairs, same = sample_pairs(data.labels, 3000, 3000, rng)
    scores = pair_scores(vectors, pairs)
    verification = kfold_accuracy(scores, same, rng.permutation(len(scores)) % 10)
    all_pairs, all_same = sample_pairs(data.labels, 10**6, 200_000, rng)
    threshold, far, tar = threshold_at_far(pair_scores(vectors, all_pairs), all_same, target_far)
    return verification, Calibration(threshold, target_far, far, tar, len(all_pairs))
