"""The clustering edge threshold read from the gallery's own k-nearest-neighbour scores, with no labels.

Why: the threshold decides the clustering more than the method does (docs/BENCHMARKS.md), and neither threshold a
gallery may already have is made for it. The model's (a pair false-accept rate on some benchmark's pairs) lets
every face reach strangers in a large set and chains people together; a gallery calibration (`arcmatch
calibrate`) is a search's FPIR over the labelled faces, moves with the gallery's size and target, and a gallery of
unlabelled faces has none. The k-NN lists the clustering already holds say where strangers end.

The model: each face's k neighbour scores, rank by rank, are a two-part mixture. Strangers (most of a face's
neighbours: a face has a few photos of its own person among thousands of others) follow one Gumbel distribution,
the law of the largest of many light-tailed scores; same-person scores follow one normal distribution; the share
of same-person neighbours is fitted per rank (high at rank 1, low at rank k), which is what makes the two parts
identifiable where the pooled scores show no valley (ORL: 40 people who all look alike to the model). EM fits
it, on a sample of faces for large galleries. The edge threshold is the lowest score above the strangers' mode
where an edge is at least 4 times as likely to be a same person's as a stranger's (posterior odds 4:1), or the
score only 1 in 10,000 stranger neighbours reach if that is lower (where the two parts leave a clean gap, the odds
alone would cut close to the same person's lowest scores). Why 4:1: with the true names, the best thresholds for
Leiden and Chinese whispers on LFW-gray (0.525-0.55) and ORL (0.60) sat where 5-30% of the edges at that score
were strangers (4:1 is 20%); the fitted rule chose 0.538 and 0.612, within 0.01 of the best BCubed F for both methods
(bench/cluster_threshold.py, docs/BENCHMARKS.md). Where the fit has nothing to stand on (too few faces, or the two
parts not apart: a gallery in which nobody appears twice, where a "same person" part would only be the
strangers' own first ranks) the answer is None and the caller falls back to another threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAME_ODDS = 4.0  # an edge counts from the score where same person : stranger reaches 4 : 1
STRANGER_TAIL = 1e-4  # ... or from where only this share of stranger neighbours reach, if that comes first
MIN_SEPARATION = 2.5  # the two parts' means this many pooled standard deviations apart, or no same-person part
MIN_FACES = 30  # faces with k neighbours each needed before the fit is trusted
SAMPLE_FACES = 20_000  # faces fitted at most (a seeded sample): the fit needs shapes, not every face
EULER = 0.5772156649015329
ITERATIONS = 300
TOLERANCE = 1e-7  # change of the mean log-likelihood per score at which EM stops


@dataclass(frozen=True)
class NeighbourFit:
    """The two-part model of a gallery's k-NN scores, and the edge threshold it gives."""

    threshold: float
    faces: int  # faces fitted
    stranger_mode: float  # Gumbel location (the strangers' most common neighbour score) and scale
    stranger_scale: float
    same_mean: float  # normal mean and standard deviation of same-person neighbour scores
    same_sd: float
    same_share: tuple[float, ...]  # per rank 1..k: the fitted share of same-person neighbours

    def line(self) -> str:
        return (f"neighbour scores of {self.faces} faces: strangers around {self.stranger_mode:.3f} "
                f"(scale {self.stranger_scale:.3f}), same person {self.same_mean:.3f} +- {self.same_sd:.3f}, "
                f"{self.same_share[0]:.0%} of first and {self.same_share[-1]:.0%} of last neighbours the same person")


def ranked_scores(n: int, src, dst, weight, k: int) -> np.ndarray:
    """(n, k) per face its k best neighbour scores, highest first, from directed hits (self-hits dropped; NaN
    where a face has fewer than k neighbours)."""
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    weight = np.asarray(weight, np.float64)
    keep = src != dst
    src, weight = src[keep], weight[keep]
    order = np.lexsort((-weight, src))
    src, weight = src[order], weight[order]
    starts = np.searchsorted(src, src, side="left")
    rank = np.arange(len(src)) - starts
    inside = rank < k
    out = np.full((n, k), np.nan)
    out[src[inside], rank[inside]] = weight[inside]
    return out


def _gumbel_pdf(x: np.ndarray, mode: float, scale: float) -> np.ndarray:
    z = np.maximum((x - mode) / scale, -50.0)  # far below the mode the density is 0, not an overflow
    return np.exp(-(z + np.exp(-z))) / scale


def _normal_pdf(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def fit_neighbours(scores: np.ndarray, *, seed: int = 0) -> NeighbourFit | None:
    """The model fitted to `scores` (ranked_scores: one row per face, highest first), or None where it cannot be:
    fewer than MIN_FACES complete rows, no same-person part, or no score where same person reaches SAME_ODDS."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        return None
    x = scores[~np.isnan(scores).any(axis=1)]
    if len(x) < MIN_FACES:
        return None
    if len(x) > SAMPLE_FACES:
        x = x[np.random.default_rng(seed).choice(len(x), SAMPLE_FACES, replace=False)]
    k = x.shape[1]
    far = x[:, k // 2 :]  # a face's far neighbours are mostly strangers: the start of the stranger part
    scale = max(math.sqrt(6) * float(far.std()) / math.pi, 1e-3)
    mode = float(np.median(far)) - 0.3665 * scale  # a Gumbel's median is mode + 0.3665 scale
    mean, sd = float(np.median(x[:, 0])), max(float(x[:, 0].std()), 1e-3)
    share = np.linspace(0.6, 0.2, k)[None, :]
    previous = -np.inf
    for _ in range(ITERATIONS):
        stranger = (1 - share) * _gumbel_pdf(x, mode, scale)
        same = share * _normal_pdf(x, mean, sd)
        total = stranger + same + 1e-300
        likelihood = float(np.log(total).mean())
        r = same / total  # per score: the posterior that it is the same person
        if r.sum() < 1.0 or (1 - r).sum() < 1.0:
            return None
        share = np.clip(r.mean(axis=0, keepdims=True), 1e-4, 1 - 1e-4)
        a = 1 - r
        stranger_mean = float((a * x).sum() / a.sum())
        scale = max(math.sqrt(6 * float((a * (x - stranger_mean) ** 2).sum() / a.sum())) / math.pi, 1e-3)
        mode = stranger_mean - EULER * scale  # weighted moments: mean = mode + 0.5772 scale
        mean = float((r * x).sum() / r.sum())
        sd = max(math.sqrt(float((r * (x - mean) ** 2).sum() / r.sum())), 1e-3)
        if likelihood - previous < TOLERANCE:
            break
        previous = likelihood
    stranger_mean, stranger_sd = mode + EULER * scale, math.pi * scale / math.sqrt(6)
    if (mean - stranger_mean) / math.sqrt((sd**2 + stranger_sd**2) / 2) < MIN_SEPARATION:
        return None  # e.g. a gallery of strangers only: the "same person" part is the strangers' own top ranks
    weight = float(share.mean())
    grid = np.linspace(mode, 1.0, 2001)
    odds = weight * _normal_pdf(grid, mean, sd) / ((1 - weight) * _gumbel_pdf(grid, mode, scale) + 1e-300)
    reached = np.flatnonzero(odds >= SAME_ODDS)
    if not len(reached):
        return None
    tail_end = mode - scale * math.log(-math.log1p(-STRANGER_TAIL))  # the Gumbel's 1 - STRANGER_TAIL quantile
    threshold = min(float(grid[reached[0]]), tail_end)
    return NeighbourFit(round(threshold, 4), len(x), round(mode, 4), round(scale, 4),
                        round(mean, 4), round(sd, 4), tuple(round(float(s), 3) for s in share.ravel()))
