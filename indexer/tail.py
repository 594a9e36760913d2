"""The FPIR of a gallery at its size from every cross-identity score, with a model of the non-mated tail.

Why: the leave-one-identity-out rule (indexer/calibration.py) reads the threshold off each trial's best non-mated
score, an extreme order statistic of as many trials as the gallery has faces. At FPIR 1% on 150 people it is the
second-highest of 150 numbers, so one pair of photos decides it, and a duplicate enrollment (one person under two
names) is exactly such a pair. Every probe face is scored here against every other identity instead (its best
face there), N-1 numbers per probe instead of one, and the threshold is read from a model of where they lie:

- per probe, the location and spread of its scores (median and MAD): some faces score high against everyone, and
  a stranger's probe is as likely to be one of them as a gallery face is. The spread is the gallery's median MAD
  times (the probe's MAD / that median) to the power `spread_power`: n / (n + SPREAD_PRIOR) for n scores per
  probe by default (a small gallery's MAD is noisy and drawn towards the gallery's), lower where the gallery's
  own trials say the probes' best scores do not follow their bulk's spread (indexer/gallery_tail.py);
- pooled over probes, the standardised scores' upper tail: empirical where the evidence is dense, a generalised
  Pareto tail fitted by probability-weighted moments (Hosking and Wallis, 1987) beyond it, where a gallery of N
  people needs it (a per-identity rate near target / N; at 100 people and FPIR 1% a rate near 1e-4, about the
  highest of the 9,900 scores: extrapolated, and the reason a small gallery's estimate is loose);
- FPIR at N identities: the mean over probes of 1 - (1 - q_p(t))^N, q_p(t) the chance that one identity's best
  face scores t or more against probe p. N may be the size now or the size the gallery will have.

A pair of identities whose scores lie so far out in the fitted tail that fewer than DUPLICATE_ALPHA such pairs
would be expected among all of the gallery's pairs is taken for one person under two names: kept out of the
evidence and reported, unless a person has confirmed the two are different people (`distinct`): such a pair is
what the tail is made of, so it stays in the evidence and is never suspected again.

Strangers (faces known to be none of the enrolled: unlabelled faces, a public set of other people) are probes
with no identity of their own. The gallery's own faces give N probes, and at 100 people that is the evidence's
limit (bench/calibrate_tail.py, FPIR 1% on 100 LFW-gray people: the FPIR reached ranged over 0.31-7.78% in 20
draws, with 500 strangers over 0.18-1.83%, a little on the safe side). The interval resamples identities (the
unit that varies between galleries) on both sides, as probes and as the gallery faces they are scored against;
strangers are resampled as probes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from indexer.errors import InvalidValue

TAIL_FRACTION = 0.02  # the share of pooled standardised scores above the GPD's threshold
# at least this many scores in the fitted tail, at most a tenth of them (from 250 people on the 2% decide). At 50
# the shape was fitted on 200 of 100 people's scores, twins' among them: with 2 planted in 100 LFW-gray people
# FPIR 1% was met within a factor 2 in 6 of 20 draws (0.5 pairs set aside, one draw 39 points of identification
# lost), at 1,000 in 12 of 20 (both pairs set aside); clean, 12 and 9 of 20 (bench/calibrate_tail.py)
MIN_TAIL = 1000
MIN_SCORES = 100  # fewer cross-identity scores than this are not modelled
DUPLICATE_ALPHA = 0.1  # expected number of such extreme pairs among strangers below which a pair is suspect
# pairs of a group of names for one face (three names or more) hide each other: fitted with them, the tail is heavy
# enough to make none improbable. An outward search takes out the 2, 4, 8, ... most extreme pairs, up to this
# share of the identities or OUTWARD_LEAST (eight names for one face: 28 pairs), and judges them by the tail fitted
# without them (fit_scores)
OUTWARD_SHARE = 0.02
OUTWARD_LEAST = 28
# the most the tail judging them may be bounded (GPD shape): a light tail fitted without a gallery's most extreme
# pairs ends just below them (a GPD with shape k > 0 stops at alpha / k beyond its start) and would call its chance
# pairs impossible. At 100 LFW-gray people with 500 strangers, 5% of them enrolled people's other photos, the
# gallery's own fits ran k = 0.08-0.34: judging the strangers uncapped dropped up to 57 true strangers in a draw,
# capped at 0 (an exponential tail) kept 90% of the enrolled's photos, at 0.2 found 88% and dropped 3 true
# strangers in the median draw (docs/BENCHMARKS.md)
JUDGE_SHAPE = 0.2
MIN_IDENTITIES = 20
MIN_STRANGERS = 100  # strangers' rows from which their own best scores correct the sum over identities (clustered)
STRANGERS_ANCHOR = 10  # ... read where this many of them cross
# faces kept from searches and confirmed strangers, cut off at the threshold of their day (truncated): the rate is
# read where this many of them score above a threshold below that cut. Strangers only, 20 draws of 100 and 300
# LFW-gray people, FPIR 1%: at 10, 18 and 18 within 2x; at 30, 20 and 19; at 50, 20 and 18 (bench/kept_faces.py's
# draws, the count varied by hand)
KEPT_ANCHOR = 30
MIN_DIRECT = 500  # confirmed strangers from which the rate at the gallery's size is read off them (directly)
DIRECT_TAIL = 50  # ... counted down to their this-many-th highest best score, a GPD fitted to those beyond
SPREAD_PRIOR = 100  # scores' worth of the gallery's spread in each probe's (LFW-gray: bench/calibrate_tail.py)
_FLOOR = 1e-6  # the smallest spread a probe's scores may have (identical gallery faces)


@dataclass(frozen=True)
class Suspect:
    """Two identities that look like one person: their best cross score and how far out in the tail it is."""

    first: str
    second: str
    score: float
    expected_among_strangers: float  # how many pairs this extreme all of the gallery's pairs would give by chance
    # the gallery check's word: the one photo without which the pair would not be listed (a misfiled photo of one
    # of them under the other's name), where there is one
    misfiled: int | None = None
    same_photo: bool = False  # the gallery check's: one photo under both names, found at any gallery size


Pairs = frozenset[frozenset[str]]  # pairs of identity names


def identity_scores(vectors: np.ndarray, labels: np.ndarray, probes: np.ndarray | None = None,
                    block: int = 1024, strangers: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores (P, N): each probe face's best score against each identity, NaN against its own; the identities
    (N,); the probes' identity index (P,)). `probes` are row indices of `vectors` (default: all). `strangers`
    (unit vectors of faces that are none of the identities) are appended as rows with no own identity: their
    identity index is negative, one per stranger (-1, -2, ...), so each is a unit of its own when resampled."""
    labels = np.asarray(labels).astype(str)
    names, of = np.unique(labels, return_inverse=True)
    order = np.argsort(of, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(of[order]) != 0])
    probes = np.arange(len(vectors)) if probes is None else np.asarray(probes)
    gallery = vectors[order].T
    out = np.empty((len(probes), len(names)), np.float32)
    for start in range(0, len(probes), block):
        rows = probes[start : start + block]
        out[start : start + len(rows)] = np.maximum.reduceat(vectors[rows] @ gallery, starts, axis=1)
    own = of[probes]
    out[np.arange(len(probes)), own] = np.nan
    if strangers is not None and len(strangers):
        extra = np.empty((len(strangers), len(names)), np.float32)
        for start in range(0, len(strangers), block):
            rows = np.asarray(strangers[start : start + block], np.float32)
            extra[start : start + len(rows)] = np.maximum.reduceat(rows @ gallery, starts, axis=1)
        out, own = np.vstack([out, extra]), np.concatenate([own, -1 - np.arange(len(strangers))])
    return out, names, own


def _pwm_gpd(excess: np.ndarray) -> tuple[float, float]:
    """(k, alpha) of the GPD F(y) = 1 - (1 - k y / alpha)^(1/k), by probability-weighted moments."""
    y = np.sort(excess.astype(np.float64))
    n = len(y)
    a0 = y.mean()
    a1 = float(np.sum(y * (n - 1 - np.arange(n))) / (n * (n - 1)))
    denominator = a0 - 2 * a1
    if denominator <= 0:
        return 0.0, max(a0, 1e-9)
    return float(a0 / denominator - 2), float(2 * a0 * a1 / denominator)


@dataclass(frozen=True)
class TailModel:
    """The non-mated evidence of one gallery, modelled; `fpir(t, size)` and `threshold_for(target, size)`."""

    location: np.ndarray  # (P,) per probe
    spread: np.ndarray  # (P,)
    pooled: np.ndarray  # sorted standardised scores, the evidence
    u: float  # where the fitted tail starts
    above_u: float  # the share of pooled scores above u
    k: float
    alpha: float
    identities: int
    spread_power: float = 1.0
    centre: float = 0.0  # the probes' median log MAD, towards which each one's spread is drawn
    # strangers' own best scores (sorted) and their rows, where there are enough of them (clustered): see crossing
    strangers: np.ndarray | None = None
    stranger_best: np.ndarray | None = None
    anchor: float = np.inf  # the highest threshold at which they are read: where STRANGERS_ANCHOR of them cross
    read_by: TailModel | None = None  # a resampled model takes its gallery's reading of them (resampled)
    direct: tuple[float, float, float] | None = None  # (u, k, alpha) of the confirmed strangers' GPD (directly)
    cut: float | None = None  # where the strangers' best scores were cut off (kept from searches: truncated)
    beyond: float = 0.0  # ... and how many of them are reckoned to have scored above it, unseen
    suspects: list[Suspect] = field(default_factory=list)

    @classmethod
    def fit(cls, scores: np.ndarray, power: float | None = None) -> TailModel:
        """From identity_scores' matrix (NaN where a probe meets its own identity or excluded evidence). `power`:
        how much of each probe's own spread is taken (default: n / (n + SPREAD_PRIOR), n its scores)."""
        location, mad = _location_and_log_mad(scores)
        if power is None:  # a probe's own spread, from its N-1 scores, is noisy in a small gallery (the noise
            # would otherwise count twice, in the pooled tail and again when it is applied)
            n = float(np.median(np.isfinite(scores).sum(axis=1)))
            power = n / (n + SPREAD_PRIOR)
        centre = float(np.median(mad))
        spread = np.exp(centre + power * (mad - centre))
        z = (scores - location[:, None]) / spread[:, None]
        pooled = np.sort(z[np.isfinite(z)].astype(np.float64))
        if len(pooled) < MIN_SCORES:
            raise InvalidValue(f"too few cross-identity scores to model ({len(pooled)}): enroll more people")
        tail = max(int(TAIL_FRACTION * len(pooled)), min(MIN_TAIL, len(pooled) // 10))
        u = float(pooled[-tail - 1])
        k, alpha = _pwm_gpd(pooled[-tail:] - u)
        return cls(location, spread, pooled, u, tail / len(pooled), k, alpha, scores.shape[1], float(power), centre)

    def standardised(self, scores: np.ndarray) -> np.ndarray:
        """Other probes' scores (rows against this gallery's identities) standardised as this model's own probes
        were, so that its tail can judge them without them being part of it."""
        location, mad = _location_and_log_mad(scores)
        spread = np.exp(self.centre + self.spread_power * (mad - self.centre))
        return (scores - location[:, None]) / spread[:, None]

    def survival(self, z: np.ndarray) -> np.ndarray:
        """P(a standardised non-mated score >= z): empirical up to u, the fitted tail beyond."""
        z = np.asarray(z, np.float64)
        empirical = 1.0 - np.searchsorted(self.pooled, z, side="left") / len(self.pooled)
        fitted = gpd_survival(np.maximum(z - self.u, 0.0), self.k, self.alpha)
        return np.where(z > self.u, self.above_u * fitted, empirical)

    def fpir(self, threshold: float, size: int | None = None) -> float:
        """The share of strangers a gallery of `size` identities (default: this one's) answers as someone: read
        off confirmed strangers at this size and carried to others by the model where there are enough of them
        (directly), else the model's."""
        q = self.survival((threshold - self.location) / self.spread)
        at_size = float(np.mean(1.0 - (1.0 - q) ** (size or self.identities)))
        reader = self.read_by or self
        if reader.direct is None:
            return float(min(self.crossing(threshold) * at_size, 1.0))
        now = float(np.mean(1.0 - (1.0 - q) ** self.identities))
        grown = at_size / now if now > 0 else (size or self.identities) / self.identities
        return float(min(reader.read_directly(threshold) * grown, 1.0))

    def read_directly(self, threshold: float) -> float:
        """The share of the confirmed strangers whose best score reaches `threshold`: counted down to their
        DIRECT_TAIL-th highest, the GPD fitted to those beyond it."""
        assert self.direct is not None and self.stranger_best is not None
        u, k, alpha = self.direct
        best = self.stranger_best
        if threshold <= u:
            return float(1.0 - np.searchsorted(best, threshold, side="left") / len(best))
        return float(DIRECT_TAIL / len(best) * gpd_survival(np.float64(threshold - u), k, alpha))

    def crossing(self, threshold: float) -> float:
        """The share of the summed per-identity rates that is distinct strangers crossing (1 without strangers):
        their own best scores at or above the threshold against the model's sum over the same rows, read at the
        threshold itself up to the anchor and at the anchor beyond it, where too few of them cross to count."""
        if self.read_by is not None:
            return self.read_by.crossing(threshold)
        if self.stranger_best is None or self.strangers is None:
            return 1.0
        at = min(float(threshold), self.anchor)
        summed = self.summed(at, self.strangers)
        best = self.stranger_best
        crossed = (len(best) - np.searchsorted(best, at, side="left") + self.beyond) / (len(best) + self.beyond)
        return float(crossed / summed) if summed > 0 else 1.0

    def summed(self, threshold: float, rows: np.ndarray) -> float:
        """The model's per-identity rates summed over this gallery's identities, averaged over the probes `rows`."""
        q = self.survival((threshold - self.location[rows]) / self.spread[rows])
        return float(np.mean(1.0 - (1.0 - q) ** self.identities))

    def threshold_for(self, target: float, size: int | None = None) -> float:
        """The lowest threshold whose modelled FPIR is at most `target`."""
        return lowest_threshold(lambda t: self.fpir(t, size), target)


def _location_and_log_mad(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's median and the log of its MAD (floored: identical gallery faces have none)."""
    location = np.nanmedian(scores, axis=1)
    mad = np.log(np.maximum(1.4826 * np.nanmedian(np.abs(scores - location[:, None]), axis=1), _FLOOR))
    return location, mad


def gpd_survival(excess: np.ndarray, k: float, alpha: float) -> np.ndarray:
    """P(an excess over the GPD's threshold >= `excess`), for the GPD (k, alpha) of _pwm_gpd."""
    if abs(k) < 1e-9:
        return np.exp(-excess / alpha)
    return np.maximum(1.0 - k * excess / alpha, 0.0) ** (1.0 / k)


def lowest_threshold(rate: Callable[[float], float], target: float) -> float:
    """The lowest cosine threshold whose `rate` is at most `target` (bisection: a rate of strangers falls as the
    threshold rises)."""
    low, high = -1.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if rate(middle) > target:
            low = middle
        else:
            high = middle
    return high


def suspected_duplicates(scores: np.ndarray, names: np.ndarray, own: np.ndarray, model: TailModel,
                         alpha: float = DUPLICATE_ALPHA, distinct: Pairs = frozenset()) -> list[Suspect]:
    """Identity pairs whose best cross score is so far out that fewer than `alpha` such pairs would be expected
    among all of the gallery's pairs by chance; never a pair in `distinct` (confirmed to be different people),
    nor a stranger's row (it is known to be nobody enrolled). A pair is judged by its most extreme score as each
    probe's spread standardises it, and reported with its highest raw score (which may be another photo's)."""
    z = (scores - model.location[:, None]) / model.spread[:, None]
    pairs = len(names) * (len(names) - 1) / 2
    found: dict[tuple[int, int], Suspect] = {}
    rows, cols = np.nonzero(np.nan_to_num(z, nan=-np.inf) > model.u)
    for r, c in zip(rows, cols, strict=True):
        if own[r] < 0 or frozenset((str(names[own[r]]), str(names[c]))) in distinct:
            continue
        expected = float(pairs * model.survival(z[r, c]))
        if expected < alpha:
            key = tuple(sorted((int(own[r]), int(c))))
            if key not in found or expected < found[key].expected_among_strangers:
                found[key] = Suspect(str(names[key[0]]), str(names[key[1]]), float(scores[r, c]), expected)
    highest = {key: float(np.nanmax(np.concatenate([scores[own == key[0], key[1]], scores[own == key[1], key[0]]])))
               for key in found}
    return sorted((replace(s, score=max(s.score, highest[key])) for key, s in found.items()),
                  key=lambda s: s.expected_among_strangers)


def fit_gallery(vectors: np.ndarray, labels: np.ndarray, probes: np.ndarray | None = None, rounds: int = 2,
                distinct: Pairs = frozenset(), strangers: np.ndarray | None = None
                ) -> tuple[TailModel, np.ndarray, np.ndarray, np.ndarray]:
    """The tail model of a gallery with its suspected duplicates kept out of the evidence (found, removed and
    fitted again up to `rounds` times); also returns the scores, identities and probes' identities (negative
    for the strangers' rows). `distinct`: pairs of identity names a person confirmed are different people (kept
    as evidence, never suspected). `strangers`: unit vectors of faces known to be none of the enrolled, each a
    probe against every identity: more evidence where the gallery has few people."""
    scores, names, own = identity_scores(vectors, labels, probes, strangers=strangers)
    return fit_scores(scores, names, own, rounds, distinct)


def fit_scores(scores: np.ndarray, names: np.ndarray, own: np.ndarray, rounds: int = 2,
               distinct: Pairs = frozenset()) -> tuple[TailModel, np.ndarray, np.ndarray, np.ndarray]:
    """fit_gallery on identity_scores' result, for a caller that needs the scores themselves too."""
    if len(names) < MIN_IDENTITIES:
        raise InvalidValue(f"a tail model needs at least {MIN_IDENTITIES} identities; the gallery has {len(names)}")
    evidence = scores.copy()
    model, suspects = TailModel.fit(evidence), []
    for _ in range(rounds):
        found = [s for s in suspected_duplicates(evidence, names, own, model, distinct=distinct)
                 if (s.first, s.second) not in {(x.first, x.second) for x in suspects}]
        found = found or _outward(evidence, names, own, model, distinct)
        if not found:
            break
        suspects += found
        _set_aside(evidence, names, own, found)
        model = TailModel.fit(evidence)
    return replace(model, suspects=suspects), evidence, names, own


def _set_aside(evidence: np.ndarray, names: np.ndarray, own: np.ndarray, pairs: list[Suspect]) -> None:
    index = {name: i for i, name in enumerate(names)}
    for s in pairs:
        a, b = index[s.first], index[s.second]
        evidence[own == a, b] = np.nan
        evidence[own == b, a] = np.nan


def _outward(evidence: np.ndarray, names: np.ndarray, own: np.ndarray, model: TailModel, distinct: Pairs
             ) -> list[Suspect]:
    """The suspects a tail fitted with them hides: one face under four names gives six pairs at a cosine near 1,
    enough of the tail's thousand scores to make it heavy, and then no pair of them is improbable (a gallery of 30
    people, one face under four names: nothing listed, and `calibrate` found no threshold for FPIR 1%). For each
    count of the most extreme pairs from 2 to OUTWARD_LEAST (or OUTWARD_SHARE of the identities), the tail is
    fitted again without them (its shape capped at JUDGE_SHAPE) and judges every pair; the largest such set whose
    least extreme pair it finds improbable is returned: a generalised extreme Studentized deviate search. Chance
    pairs in a clean gallery are not improbable by the tail fitted without their like, so nothing is found there.
    Each probe keeps its location and spread (a few scores do not move a median), so a refit is the GPD's alone."""
    z = (evidence - model.location[:, None]) / model.spread[:, None]
    rows, cols = np.nonzero(np.nan_to_num(z, nan=-np.inf) > model.u)
    extreme: dict[tuple[int, int], float] = {}
    for r, c in zip(rows, cols, strict=True):
        if own[r] >= 0 and frozenset((str(names[own[r]]), str(names[c]))) not in distinct:
            key = (min(int(own[r]), int(c)), max(int(own[r]), int(c)))
            extreme[key] = max(extreme.get(key, -np.inf), float(z[r, c]))
    ranked = sorted(extreme, key=lambda key: -extreme[key])
    most = min(len(ranked), max(OUTWARD_LEAST, int(OUTWARD_SHARE * len(names))))
    highest = np.asarray([extreme[key] for key in ranked])  # only these pairs' most extreme scores pass u
    pairs = len(names) * (len(names) - 1) / 2
    judge, removed = None, []
    for taken, (a, b) in enumerate(ranked[:most], start=1):
        pair = np.concatenate([z[own == a, b], z[own == b, a]])
        removed.append(pair[np.isfinite(pair)])
        refit = _refit(model, np.concatenate(removed)) if taken >= 2 else None
        if refit is not None and pairs * refit.survival(highest[taken - 1]) < DUPLICATE_ALPHA:
            judge = refit  # its least extreme pair is improbable by the tail fitted without the set
    return [] if judge is None else suspected_duplicates(evidence, names, own, judge, distinct=distinct)


def _refit(model: TailModel, removed: np.ndarray) -> TailModel:
    """The model's GPD fitted again without `removed` (standardised scores of its evidence), its shape capped at
    JUDGE_SHAPE; the probes' locations and spreads as they were."""
    n = len(model.pooled) - len(removed)
    tail = max(int(TAIL_FRACTION * n), min(MIN_TAIL, n // 10))
    top = model.pooled[-(tail + 1 + len(removed)):]  # the new top tail + 1 lies among these
    keep = np.ones(len(top), bool)
    for value in removed[removed >= top[0]]:  # a multiset difference: each removed score takes one equal score
        hits = np.flatnonzero((top == value) & keep)
        if len(hits):
            keep[hits[-1]] = False
    top = top[keep][-(tail + 1):]
    u = float(top[0])
    k, alpha = _pwm_gpd(top[1:] - u)
    return replace(model, u=u, above_u=tail / n, k=min(k, JUDGE_SHAPE), alpha=alpha)


def clustered(model: TailModel, evidence: np.ndarray, own: np.ndarray) -> tuple[TailModel, dict | None]:
    """(the model reading strangers' own best scores, what they say at the anchor) where the evidence holds
    MIN_STRANGERS strangers' rows or more; (the model, None) where it does not. Why: the model sums each identity's
    chance of meeting a stranger's best as if identities were met independently, but a face that resembles one
    enrolled person resembles that person's look-alikes too, so crossings come in clusters and fewer distinct
    strangers cross than the sum says. A stranger's own best score is a direct trial of that, so the model's rate
    is scaled by what the strangers give against its sum over their rows (TailModel.crossing): at each threshold
    where STRANGERS_ANCHOR or more of them cross, and beyond, by the factor at the last such threshold. On LFW-gray
    with 500 strangers (docs/BENCHMARKS.md) that factor was 0.5-0.8, and FPIR 1% was met within 2x in 18 of 20
    draws at 100 people (15 before) and 19 of 20 at 300 (17)."""
    rows = np.flatnonzero(own < 0)
    if len(rows) < MIN_STRANGERS:
        return model, None
    scaled = _reading(model, evidence, rows)
    factor = scaled.crossing(scaled.anchor)
    return scaled, {"threshold": scaled.anchor, "observed": STRANGERS_ANCHOR / len(rows), "modelled":
                    STRANGERS_ANCHOR / len(rows) / factor, "factor": factor, "strangers": len(rows)}


def directly(model: TailModel, evidence: np.ndarray, own: np.ndarray, confirmed: np.ndarray
             ) -> tuple[TailModel, dict | None]:
    """(the model reading the FPIR at the gallery's size off the strangers its owner confirmed (`confirmed`, one
    flag per stranger), what they say) where MIN_DIRECT or more of them are in the evidence; (the model, None)
    where fewer are. Why: the model's rate beyond where STRANGERS_ANCHOR strangers cross is the sum over
    identities scaled by the factor there (clustered), and at FPIR 0.1% on 1,000 LFW-gray people that let 0.30%
    through with 2,000 strangers; their own best scores, counted and a GPD fitted to their 50 highest, gave
    0.11% (10 of 10 draws within 2x). Only strangers nobody will enroll may be read so: one enrolled person's
    photo among them is a stranger crossing at that person's own score, which is why unconfirmed unlabelled faces
    are dropped when they look enrolled (indexer/strangers.py) and their look-alikes with them."""
    rows = np.flatnonzero(own < 0)
    rows = rows[confirmed[-1 - own[rows]]]  # a stranger's row carries -1 - its index (identity_scores)
    if len(rows) < MIN_DIRECT:
        return model, None
    read = _direct_reading(model, evidence, rows)
    u = read.direct[0]  # type: ignore[index]
    return read, {"direct": True, "strangers": len(rows), "threshold": u, "observed": read.read_directly(u),
                  "modelled": replace(model, strangers=None, stranger_best=None).fpir(u)}


def truncated(model: TailModel, evidence: np.ndarray, own: np.ndarray, cut: float) -> tuple[TailModel, dict | None]:
    """(the model reading strangers whose best scores were cut off at `cut`, what they say) where the evidence holds
    MIN_STRANGERS such rows or more; (the model, None) where it does not. Why: a service keeps the faces it answered
    unknown, so the strangers that crossed the threshold of the day are missing from them, and read as clustered
    reads ingested ones they say fewer cross than do: 1.2-1.9% reached for a 1% target on LFW-gray. Between a lower
    threshold, where KEPT_ANCHOR of them score above it, and the cut they are all there: the share of them in that
    band against the model's sum over their rows there gives the factor f, as clustered's does, and the share the
    model so scaled puts beyond the cut gives the unseen ones (r = A / n kept in the band; f (S_a - S_cut) /
    (1 - f S_cut) = r, S the sum over identities averaged over their rows). Rows that score the cut or more now
    (the gallery grew since) are not read: the others of their day that crossed were never kept."""
    rows = np.flatnonzero(own < 0)
    rows = rows[np.nanmax(evidence[rows], axis=1) < cut] if len(rows) else rows
    if len(rows) < MIN_STRANGERS:
        return model, None
    read = _cut_reading(model, evidence, rows, cut)
    return read, {"cut": cut, "threshold": read.anchor, "observed": KEPT_ANCHOR / len(rows), "modelled":
                  model.summed(read.anchor, rows) - model.summed(cut, rows), "factor": read.crossing(read.anchor),
                  "strangers": len(rows), "beyond": round(read.beyond, 1)}


def _cut_reading(model: TailModel, evidence: np.ndarray, rows: np.ndarray, cut: float) -> TailModel:
    """`model` reading the cut-off strangers of `rows`: the anchor where KEPT_ANCHOR of them score above it, and
    how many crossed the cut unseen (truncated)."""
    best = np.sort(np.nanmax(evidence[rows], axis=1))
    anchor = float(best[-min(KEPT_ANCHOR, len(best))])
    share = KEPT_ANCHOR / len(best)
    at_anchor, at_cut = model.summed(anchor, rows), model.summed(cut, rows)
    factor = share / max(at_anchor - at_cut + share * at_cut, 1e-12)
    beyond = len(best) * factor * at_cut / max(1.0 - factor * at_cut, 1e-3)
    return replace(model, strangers=rows, stranger_best=best, anchor=anchor, cut=cut, beyond=float(beyond))


def top_gpd(ranked: np.ndarray, top: int) -> tuple[float, float, float]:
    """(u, k, alpha): a GPD on the `top` highest of `ranked` (sorted), beyond the next one, u."""
    u = float(ranked[-top - 1])
    return (u, *_pwm_gpd(ranked[-top:] - u))


def _direct_reading(model: TailModel, evidence: np.ndarray, rows: np.ndarray) -> TailModel:
    """_reading, and the GPD of the strangers' DIRECT_TAIL highest best scores that read_directly takes."""
    read = _reading(model, evidence, rows)
    return replace(read, direct=top_gpd(read.stranger_best, DIRECT_TAIL))


def _reading(model: TailModel, evidence: np.ndarray, rows: np.ndarray) -> TailModel:
    """`model` reading the strangers of `rows` (of `evidence`): their best scores, and the anchor they set."""
    best = np.sort(np.nanmax(evidence[rows], axis=1))
    return replace(model, strangers=rows, stranger_best=best, anchor=float(best[-STRANGERS_ANCHOR]))


def resampled(evidence: np.ndarray, own: np.ndarray, rounds: int = 100, seed: int = 0,
              power: float | None = None, reading: TailModel | None = None) -> list[TailModel]:
    """Tail models of `rounds` galleries drawn from this one's identities with replacement, on both sides of the
    scores: an identity drawn comes with its probes' rows and with its column (the gallery face strangers meet),
    strangers' rows are drawn on their own. How much the model would move with other people of the same kind,
    for intervals at any threshold. Rows alone miss part of it: at 100 LFW-gray people and FPIR 1%, their 95%
    interval held the FPIR really reached in 17 of 20 draws, both sides in 20 of 20. `reading`: the gallery's
    model whose reading of the strangers' own best scores (clustered) each takes, with the strangers drawn again
    but against the gallery's own identities: a drawn gallery repeats identities, fewer distinct faces for a
    stranger to meet, which the sum over identities counts as more chances, so a reading of its own would set that
    against the strangers (a factor biased low)."""
    rng = np.random.default_rng(seed)
    columns = evidence.shape[1]
    rows_of = [np.flatnonzero(own == i) for i in range(columns)]
    strangers = np.flatnonzero(own < 0)
    models = []
    for _ in range(rounds):
        drawn = rng.integers(columns, size=columns)
        picked = rng.choice(strangers, len(strangers))
        rows = np.concatenate([rows_of[i] for i in drawn] + [picked])
        # a row meets its own identity wherever that was drawn: NaN, as in the gallery
        sample = evidence[rows][:, drawn]
        sample[own[rows][:, None] == drawn[None, :]] = np.nan
        try:
            models.append(replace(TailModel.fit(sample, power),
                                  read_by=_read_again(reading, evidence, picked, rng)))
        except InvalidValue:
            continue
    return models


def _read_again(reading: TailModel | None, evidence: np.ndarray, picked: np.ndarray,
                rng: np.random.Generator) -> TailModel | None:
    """The gallery's reading of the strangers with the strangers drawn again (`picked`, rows of `evidence`; the
    confirmed ones drawn among themselves where the reading is direct), so that an interval holds the reading's
    own noise (it rests on STRANGERS_ANCHOR crossings, DIRECT_TAIL, or KEPT_ANCHOR below a cut)."""
    if reading is not None and reading.strangers is not None and reading.direct is not None:
        return _direct_reading(reading, evidence, rng.choice(reading.strangers, len(reading.strangers)))
    if reading is not None and reading.strangers is not None and reading.cut is not None:
        return _cut_reading(reading, evidence, rng.choice(reading.strangers, len(reading.strangers)), reading.cut)
    if reading is None or reading.strangers is None or len(picked) < MIN_STRANGERS:
        return reading
    return _reading(reading, evidence, picked)


def interval(evidence: np.ndarray, own: np.ndarray, threshold: float, size: int, rounds: int = 100,
             seed: int = 0, power: float | None = None) -> tuple[float, float]:
    """A 95% interval of the modelled FPIR at `threshold`, resampling identities (their probes' rows)."""
    values = [m.fpir(threshold, size) for m in resampled(evidence, own, rounds, seed, power)]
    low, high = np.percentile(values, [2.5, 97.5]) if values else (np.nan, np.nan)
    return float(low), float(high)
