"""What a gallery threshold means, and what the thresholds beside it would mean: FPIR with its interval and FNIR at
a few thresholds, the FNIR-vs-FPIR curve a calibration keeps, and a threshold for a rate read back from that curve.

Why: a cosine of 0.4613 says nothing to the person who must choose it. The operator chooses a trade-off (strangers
let in against known people missed), and sees it only when the chosen threshold is shown beside stricter and
looser ones and the model's own. A caller with stricter needs than the gallery's default asks for a rate
(`fpir=0.001`) rather than guessing a cosine; the stored curve answers it without a second calibration.

Two estimators give the FPIR at a threshold: `Empirical` counts the trials (top-1 rule; a Clopper-Pearson
interval, which treats trials as independent: a pair's two directions are not, so the interval is a little
narrow), `Modelled` reads the modelled tail (indexer/tail.py; the interval resamples identities). Both are at the
gallery's size when calibrated: `at_size` moves a rate to another size, each identity being one more chance for a
stranger to match.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from indexer.errors import InvalidValue

LEVEL = 0.95
CURVE_POINTS = 40
LOWEST_MODELLED = 1e-4  # below this a modelled tail is extrapolation the evidence of any gallery here cannot check
HIGHEST = 0.5  # a threshold that lets half the strangers in is no threshold


@dataclass(frozen=True)
class Point:
    """One threshold and what it gives: FPIR (and its interval) at the calibrated size, FNIR on mated trials."""

    label: str  # "chosen", "stricter", "looser", "model"
    threshold: float
    fpir: float
    fpir_low: float
    fpir_high: float
    fnir: float | None


def binomial_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson: exact for k successes of n independent trials."""
    if n <= 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def at_size(fpir: float, from_size: int, to_size: int) -> float:
    """The FPIR a threshold that gives `fpir` at `from_size` identities gives at `to_size`, to first order:
    1 - (1 - fpir)^(to / from). A 1% at 150 people is about 10% at 1,500."""
    if to_size == from_size:
        return float(fpir)
    return float(1.0 - (1.0 - fpir) ** (to_size / max(from_size, 1)))


class Empirical:
    """The FPIR as the share of non-mated trials at or above a threshold (the top-1 rule's)."""

    def __init__(self, nonmated: np.ndarray, threshold_for: Callable[[float], float]) -> None:
        self.nonmated = np.asarray(nonmated, np.float64)
        self.threshold_for = threshold_for
        self.lowest = 1.0 / max(len(self.nonmated), 1)  # one trial: no smaller rate can be read

    def fpir(self, thresholds) -> list[tuple[float, float, float]]:
        n = len(self.nonmated)
        out = []
        for t in np.atleast_1d(thresholds):
            k = int((self.nonmated >= t).sum())
            out.append((k / n, *binomial_interval(k, n)))
        return out


class Modelled:
    """The FPIR read from a tail model at the gallery's size, the interval from the resampled models."""

    def __init__(self, model, resampled: list, size: int) -> None:
        self.model, self.resampled, self.size = model, resampled, size
        self.lowest = LOWEST_MODELLED

    def threshold_for(self, target: float) -> float:
        return self.model.threshold_for(target, self.size)

    def fpir(self, thresholds) -> list[tuple[float, float, float]]:
        out = []
        for t in np.atleast_1d(thresholds):
            values = [m.fpir(t, self.size) for m in self.resampled]
            point = self.model.fpir(t, self.size)
            low, high = np.percentile(values, [2.5, 97.5]) if values else (point, point)
            out.append((point, float(min(low, point)), float(max(high, point))))  # the estimate is inside its own
        return out


def points(estimator, fnir: Callable[[float], float | None], target: float,
           model_threshold: float | None) -> list[Point]:
    """The chosen threshold, the ones for half and twice the target, and the model's own."""
    chosen = [("stricter", estimator.threshold_for(target / 2)), ("chosen", estimator.threshold_for(target))]
    if 2 * target < 1:
        chosen.append(("looser", estimator.threshold_for(2 * target)))
    if model_threshold is not None:
        chosen.append(("model", float(model_threshold)))
    rates = estimator.fpir([t for _, t in chosen])
    return [Point(label, float(t), *(float(v) for v in rate), fnir(t))
            for (label, t), rate in zip(chosen, rates, strict=True)]


def curve(estimator, fnir: Callable[[float], float | None], points: int = CURVE_POINTS) -> list[list]:
    """[threshold, fpir, fnir] rows, thresholds rising, from the lowest rate the estimator can read to HIGHEST."""
    targets = np.geomspace(HIGHEST, max(estimator.lowest, 1e-6), points)
    thresholds = sorted({round(float(estimator.threshold_for(float(f))), 6) for f in targets})
    rates = estimator.fpir(thresholds)
    return [[t, float(r[0]), fnir(t)] for t, r in zip(thresholds, rates, strict=True)]


def rate_span(lowest: float, highest: float) -> str:
    """"between A and B", each to two significant digits rounded inward, so that both ends it names are rates it
    can answer (0.49999964 is "0.49", not "0.5")."""
    def inward(value: float, up: bool) -> float:
        step = 10.0 ** (math.floor(math.log10(value)) - 1)
        return (math.ceil if up else math.floor)(value / step * (1 - 1e-12 if up else 1 + 1e-12)) * step

    return f"between {inward(lowest, True):.2g} and {inward(highest, False):.2g}"


def threshold_for_rate(rows: list[list], fpir: float) -> float:
    """The threshold the curve gives `fpir` at (log-linear between its rows); InvalidValue outside its range."""
    usable = [(t, f) for t, f, _ in rows if f > 0]
    if not usable:
        raise InvalidValue("the gallery's calibration keeps no FPIR curve: run `arcmatch calibrate` again")
    thresholds = np.asarray([t for t, _ in usable])
    rates = np.asarray([f for _, f in usable])
    lowest, highest = rates.min(), rates.max()
    if not lowest * (1 - 1e-9) <= fpir <= highest * (1 + 1e-9):
        raise InvalidValue(f"the gallery's calibration can answer an FPIR {rate_span(lowest, highest)} "
                           f"(at its current size), not {fpir}: give a threshold instead, or calibrate a larger "
                           f"gallery")
    order = np.argsort(rates)  # FPIR falls as the threshold rises; interpolate in log-rate
    return float(np.interp(np.log(fpir), np.log(rates[order]), thresholds[order]))
