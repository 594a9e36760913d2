"""The edge threshold for a clustering method that chains: connected components and Leiden, read off the graph by
where their clusters agree with Chinese whispers', with no labels.

Why: the neighbours' threshold (indexer/edge_threshold.py) is where an edge is four times as likely to join one
person's photos as two strangers'. Chinese whispers outvotes the stranger edges left there, and came within 0.002
of its best BCubed F on LFW-gray, ORL and the demo's synthetic faces. Connected components join two people through
any one of them, and Leiden's modularity merges people a few of them join, so both want a stricter threshold, by
how much depending on the data: their best thresholds were 0.01, 0.04-0.05 and 0.05 above it on those three sets
(bench/cluster_threshold.py), and at the neighbours' threshold connected components lost 0.09 and 0.13 of F on
the last two. The threshold is therefore raised, from the neighbours' one up to the same-person part's mean score
(beyond it most of a person's own edges are gone), to where the method's clusters agree best (BCubed F) with
Chinese whispers' at the neighbours' threshold: the method keeps its own semantics, and the robust method only
says where the stranger edges stop mattering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from indexer.clustering import Graph, bcubed, cluster_graph

REFERENCE = "chinese-whispers"  # the method that outvotes stranger edges, whose clusters the others are held to
STEP = 0.025  # the coarse grid of thresholds tried; the best one's neighbours half a step away are tried too


@dataclass(frozen=True)
class Raised:
    """The threshold a chaining method runs at, its clusters there, and how well they agree with the reference."""

    threshold: float
    labels: np.ndarray
    agreement: float  # BCubed F of the method's clusters against the reference's
    tried: int  # thresholds clustered


def thresholds_between(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... up to stop (start alone where stop is not above it)."""
    count = max(int(np.floor((stop - start) / step + 1e-9)), 0)
    return [round(start + i * step, 4) for i in range(count + 1)]


def clusterings(start: float, same_mean: float) -> int:
    """How many clusterings raised_threshold runs at most (the reference's included), for a progress bar."""
    return len(thresholds_between(start, same_mean, STEP)) + 3


def raised_threshold(everything: Graph, start: float, same_mean: float, method: str, *, seed: int = 0,
                     each: Callable[[float], None] | None = None) -> Raised:
    """For `method` on `everything` (the k-NN graph with its edges from `start` up at least): the threshold from
    `start` (the neighbours' threshold) to `same_mean` whose clusters agree best with REFERENCE's at `start`. The
    reference itself stays at `start`. Ties go to the lower threshold (fewer of a person's own edges dropped).
    `each` is called with the threshold of every clustering once it is done (a progress bar)."""

    def at(threshold: float, how: str) -> np.ndarray:
        labels = cluster_graph(everything.above(threshold), how, seed=seed)
        if each is not None:
            each(threshold)
        return labels

    if method == REFERENCE:
        return Raised(start, at(start, method), 1.0, 1)
    reference = at(start, REFERENCE)
    scored: dict[float, tuple[float, np.ndarray]] = {}

    def score(threshold: float) -> None:
        if threshold not in scored and start <= threshold <= max(same_mean, start):
            labels = at(threshold, method)
            scored[threshold] = (bcubed(reference, labels)[2], labels)

    for threshold in thresholds_between(start, same_mean, STEP):
        score(threshold)
    coarse = max(scored, key=lambda t: (scored[t][0], -t))
    score(round(coarse - STEP / 2, 4))
    score(round(coarse + STEP / 2, 4))
    best = max(scored, key=lambda t: (scored[t][0], -t))
    return Raised(best, scored[best][1], round(float(scored[best][0]), 4), len(scored) + 1)
