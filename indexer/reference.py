"""A model's own non-mated tail, measured once on its held-out identities and kept with it, as a second opinion
for galleries too small to say how their own tail falls off.

Why: at 100 people and FPIR 1% the rate a calibration must place is about the single highest of the gallery's
9,900 cross scores, so the fitted tail's shape decides the threshold and swings from draw to draw (on LFW-gray its
shape ran 0.08-0.34 over 20 galleries, and the FPIR reached 0.3-7.9%). A model's held-out identities (`arcmatch
eval --calibrate`: 200 to 2,000 people, one face each) hold 40,000 to 4 million such scores: their standardised
tail (indexer/tail.py's units, in which each probe's location and spread are its own) is known far out.

How it is used (`Stricter`): the gallery's own model up to its tail's start, the reference's shape beyond, anchored
at the gallery's own share there; the FPIR at a threshold is the larger of that and the gallery's own estimate.
Taking the larger, not the reference's alone, because the reference is of the model's held-out photos, not the
gallery's: on ORL (40 people in one studio) the reference of LFW-gray photos alone let 9-11% of strangers through
for a 1% promise (an experiment), where the stricter of the two stays with the gallery's own. On LFW-gray galleries
of 100 people the stricter of the two met 1% within 2x in 16 of 20 draws, where the gallery's tail alone did in
10-13, and never let more than 1.84% through (7.74% alone). On the demo's synthetic faces, whose own tail is already
too strict, it is stricter still: at 100 people the 2 of 10 draws within 2x became none, the median identified
unchanged (bench/calibrate_tail.py --reference, docs/BENCHMARKS.md). From REFERENCE_BELOW people on the
gallery's own tail is left alone: at 300 the stricter of the two met 2x in 12 of 20 draws where the tail alone did
in 13, a little stricter for nothing, and at 1,000 in the same 10 of 10.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from indexer.tail import TailModel, fit_scores, gpd_survival, identity_scores, lowest_threshold

REFERENCE_BELOW = 300  # galleries with fewer identities than this take the reference's opinion too
MIN_REFERENCE = 200  # held-out identities a reference needs (a gallery of 100 already has a tail of its own)
MAX_REFERENCE = 2000  # identities drawn for one (4 million cross scores, where a gallery of 300 has 90,000)
POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)  # probe-spread powers the tail is kept at (a gallery's own lies between)
LEVELS = 24  # points of each tail's empirical part kept, log-spaced in survival from the median to its fitted tail


@dataclass(frozen=True)
class TailReference:
    """The standardised non-mated tail of a model's held-out identities, at each of POWERS: the empirical part as
    (z, log survival) points, then the fitted generalised Pareto tail (indexer.tail.TailModel's u, share, k, alpha)."""

    identities: int
    tables: list[dict]

    @classmethod
    def measure(cls, vectors: np.ndarray, labels: np.ndarray, seed: int = 0) -> TailReference | None:
        """From held-out unit vectors and their identities: one face each of up to MAX_REFERENCE identities, their
        suspected duplicates set aside as a gallery's are; None with fewer than MIN_REFERENCE identities."""
        labels = np.asarray(labels).astype(str)
        rng = np.random.default_rng(seed)
        names = rng.permutation(np.unique(labels))[:MAX_REFERENCE]
        if len(names) < MIN_REFERENCE:
            return None
        rows = np.asarray([rng.choice(np.flatnonzero(labels == n)) for n in names])
        scores, names, own = identity_scores(np.asarray(vectors, np.float32)[rows], labels[rows])
        evidence = fit_scores(scores, names, own)[1]
        tables = []
        for power in POWERS:
            model = TailModel.fit(evidence, power)
            levels = np.geomspace(0.5, model.above_u, LEVELS)
            z = np.quantile(model.pooled, 1.0 - levels)
            tables.append({"power": power, "z": [round(float(v), 6) for v in z],
                           "log_survival": [round(float(v), 6) for v in np.log(levels)], "u": model.u,
                           "above_u": model.above_u, "k": model.k, "alpha": model.alpha})
        return cls(len(names), tables)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> TailReference | None:
        """A stored reference, or None where there is none or it is not one (a record written by other code)."""
        try:
            return cls(int(data["identities"]), [dict(t) for t in data["tables"]]) if data else None
        except (KeyError, TypeError, ValueError):
            return None

    def survival(self, z: np.ndarray, power: float) -> np.ndarray:
        """P(a standardised non-mated score >= z) at the probe-spread `power`, between the two nearest kept powers
        (linear in log survival)."""
        powers = np.asarray([t["power"] for t in self.tables])
        upper = int(np.clip(np.searchsorted(powers, power), 1, len(powers) - 1))
        weight = float(np.clip((power - powers[upper - 1]) / (powers[upper] - powers[upper - 1]), 0.0, 1.0))
        low, high = (_log_survival(self.tables[i], z) for i in (upper - 1, upper))
        return np.exp((1 - weight) * low + weight * high)


def _log_survival(table: dict, z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    empirical = np.interp(z, table["z"], table["log_survival"])
    fitted = np.log(np.maximum(table["above_u"] * gpd_survival(np.maximum(z - table["u"], 0.0), table["k"],
                                                               table["alpha"]), 1e-300))
    return np.where(z > table["u"], fitted, empirical)


@dataclass(frozen=True)
class Stricter:
    """A gallery's tail model with a reference's opinion: the FPIR at a threshold is the larger of the gallery's
    own and the one with the reference's shape beyond the gallery's tail start (module docstring)."""

    model: TailModel
    reference: TailReference

    def referenced(self, threshold: float, size: int | None = None) -> float:
        """The FPIR with the reference's shape beyond the gallery's tail start, anchored at its share there."""
        m = self.model
        z = (threshold - m.location) / m.spread
        at_u = float(self.reference.survival(np.asarray(m.u), m.spread_power))
        beyond = m.above_u * self.reference.survival(z, m.spread_power) / max(at_u, 1e-300)
        q = np.where(z > m.u, np.minimum(beyond, 1.0), m.survival(z))
        return float(np.mean(1.0 - (1.0 - q) ** (size or m.identities)))

    def fpir(self, threshold: float, size: int | None = None) -> float:
        return max(self.model.fpir(threshold, size), self.referenced(threshold, size))

    def threshold_for(self, target: float, size: int | None = None) -> float:
        return lowest_threshold(lambda t: self.fpir(t, size), target)

    def opinions(self, target: float, size: int | None = None) -> dict:
        """The threshold the gallery's own tail and the reference's shape would each choose for `target`."""
        return {"identities": self.reference.identities,
                "own_threshold": round(self.model.threshold_for(target, size), 6),
                "reference_threshold": round(lowest_threshold(lambda t: self.referenced(t, size), target), 6)}
