"""Verification metrics and threshold calibration on pairs of embeddings, for any embedder (ONNX included).

Imports no torch: serving hosts and evaluation jobs of third-party models calibrate without it.

Scores are cosine similarities: higher means "same person", and a pair is accepted when score >= threshold.
ROC computation is sklearn's; nothing here re-implements it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from common.errors import BadInput
from embedder.embed import Embedder
from embedder.layout import Calibration
from embedder.sources import LabelledImage, decode_items


@dataclass(frozen=True)
class Verification:
    accuracy_mean: float
    accuracy_std: float
    auc: float
    folds: int
    tar_at_far: dict[float, float] = field(default_factory=dict)


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


def tar_at_far(scores: np.ndarray, same: np.ndarray, fars: tuple[float, ...] = (1e-2, 1e-3)) -> dict[float, float]:
    """TAR at each FAR the data can resolve (at least ten impostor pairs above it); others are left out."""
    impostors = int((~same).sum())
    return {far: threshold_at_far(scores, same, far)[2] for far in fars if far * impostors >= 10}


def identity_interval(hits: np.ndarray, identities: np.ndarray | list[str], *, level: float = 0.95,
                      resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval for the share of `hits` (one bool per probe), resampling whole identities.

    Why identities and not probes: one person's photos succeed or fail together (a stranger who looks like an
    enrolled person has all of his photos accepted, an enrolled person with a poor gallery photo misses many), so
    the probes are not independent and an interval over probes would be too narrow. On the demo's 50 enrolled
    people it is several points wide: the third decimal of a printed rate says little about the model.
    """
    hits = np.asarray(hits, dtype=np.float64)
    names, group = np.unique(np.asarray(identities, dtype=str), return_inverse=True)
    if len(hits) != len(group) or not len(hits):
        raise BadInput(f"need one identity per probe and at least one probe, got {len(hits)} and {len(group)}")
    hits_of = np.bincount(group, weights=hits, minlength=len(names))
    probes_of = np.bincount(group, minlength=len(names))
    picks = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    shares = hits_of[picks].sum(axis=1) / probes_of[picks].sum(axis=1)
    low, high = np.quantile(shares, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def plot_roc(scores: np.ndarray, same: np.ndarray, path: str | Path, title: str = "ROC") -> Path:
    """The ROC curve (log FAR axis) as a PNG, with its AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(same, scores)
    figure, axis = plt.subplots(figsize=(5, 4), dpi=120)
    axis.plot(np.maximum(fpr, 1e-6), tpr, label=f"AUC {roc_auc_score(same, scores):.4f}")
    axis.set_xscale("log")
    axis.set_xlim(1e-4, 1)
    axis.set_xlabel("false accept rate")
    axis.set_ylabel("true accept rate")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)


def threshold_at_far(scores: np.ndarray, same: np.ndarray, target_far: float) -> tuple[float, float, float]:
    """The lowest threshold whose false accept rate on these pairs is <= target_far: (threshold, far, tar)."""
    if same.all() or not same.any():
        raise BadInput("calibration needs both genuine and impostor pairs")
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


def _verify(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> Verification:
    return replace(kfold_accuracy(scores, same, folds), tar_at_far=tar_at_far(scores, same))


def calibrate(
    embedder: Embedder, items: list[LabelledImage], target_far: float, seed: int = 0, policy=None
) -> tuple[Verification, Calibration, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Embed held-out identities; 10-fold accuracy on balanced pairs, and the threshold at target_far.

    The threshold uses every impostor pair there is (up to 200k): a FAR of 1e-3 needs thousands to be resolved.
    Returns (verification, calibration, (scores, same) of the balanced pairs, (vectors, labels) embedded).
    """
    data = decode_items(items, embedder.spec, policy=policy)
    vectors, labels = embedder.embed(data.images), np.asarray(data.labels)
    return *calibrate_vectors(vectors, labels, target_far, seed), (vectors, labels)


def calibrate_vectors(
    vectors: np.ndarray, labels: np.ndarray, target_far: float | None, seed: int = 0, *,
    threshold: float | None = None,
) -> tuple[Verification, Calibration, tuple[np.ndarray, np.ndarray]]:
    """`calibrate` on embeddings already made (unit vectors and their identity labels). With `threshold` (chosen
    some other way, e.g. for an FPIR: jobs/pipelines/demo.py) the pairs only measure FAR and TAR at it."""
    if (target_far is None) == (threshold is None):
        raise BadInput("calibration takes a target FAR or a threshold to measure, not both or neither")
    rng = np.random.default_rng(seed)
    pairs, same = sample_pairs(labels, 3000, 3000, rng)
    if same.all() or not same.any():  # the readable photos, after any the decoder skipped
        raise BadInput(f"verification needs two or more readable photos of some person and two or more people; "
                       f"the data gives {len(labels)} photo(s) of {len(np.unique(labels))} identities, "
                       f"{int(same.sum())} same-person pair(s)")
    # as many pairs of each kind: a small held-out set has fewer same-person pairs than asked for, and accuracy
    # over a majority of different-person pairs read as a skill that answering "different" always has
    n = int(min(same.sum(), (~same).sum()))
    keep = np.r_[np.flatnonzero(same)[:n], np.flatnonzero(~same)[:n]]
    pairs, same = pairs[keep], same[keep]
    scores = pair_scores(vectors, pairs)
    verification = _verify(scores, same, rng.permutation(len(scores)) % 10)
    all_pairs, all_same = sample_pairs(labels, 10**6, 200_000, rng)
    all_scores = pair_scores(vectors, all_pairs)
    if threshold is None:
        threshold, far, tar = threshold_at_far(all_scores, all_same, target_far)
    else:
        far, tar = float(np.mean(all_scores[~all_same] >= threshold)), float(np.mean(all_scores[all_same] >= threshold))
    return verification, Calibration(threshold, target_far, far, tar, len(all_pairs)), (scores, same)


def evaluate_pairs(
    embedder: Embedder, pairs_file: str | Path, root: str | Path, target_far: float, policy=None
) -> tuple[Verification, Calibration, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The LFW protocol on a pairs file: each fold's threshold chosen on the other folds; calibration on all.
    Every image of the pairs must be usable (the protocol has no place for a missing one): a file that cannot be
    read, or a raw photo in which the policy finds no face, is an error naming it. Also returns the pairs' images
    embedded, labelled by their folder (the identity, in an identity/image tree)."""
    from embedder.pairs import read_pairs

    pairs = read_pairs(pairs_file, root)
    paths = pairs.images()
    data = decode_items([LabelledImage(p, "") for p in paths], embedder.spec, policy=policy)
    if data.skipped:
        path, reason = data.skipped[0]
        raise BadInput(f"{len(data.skipped)} image(s) of the pairs cannot be used, e.g. {path}: {reason}")
    vectors = embedder.embed(data.images)
    row = {p: i for i, p in enumerate(paths)}
    index = np.array([[row[a], row[b]] for a, b in zip(pairs.left, pairs.right, strict=True)])
    scores = pair_scores(vectors, index)
    threshold, far, tar = threshold_at_far(scores, pairs.same, target_far)
    calibration = Calibration(threshold, target_far, far, tar, len(scores))
    labels = np.asarray([Path(p).parent.name for p in paths])
    return _verify(scores, pairs.same, pairs.fold), calibration, (scores, pairs.same), (vectors, labels)
