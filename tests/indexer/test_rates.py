"""The rates beside a threshold and the curve a search's `fpir=` is answered from: the interval, the size
scaling and the read-back checked by hand."""

import numpy as np
import pytest

from indexer.calibration import Trials
from indexer.errors import InvalidValue
from indexer.rates import Empirical, at_size, binomial_interval, curve, points, threshold_for_rate


def test_the_clopper_pearson_interval_has_its_known_values():
    assert binomial_interval(0, 100) == (0.0, pytest.approx(0.03622, abs=1e-4))  # the "rule of three" region
    low, high = binomial_interval(10, 100)
    assert low == pytest.approx(0.04900, abs=1e-4) and high == pytest.approx(0.17622, abs=1e-4)
    assert binomial_interval(5, 5)[1] == 1.0


def test_a_rate_grows_with_the_gallery_as_independent_chances():
    assert at_size(0.01, 100, 100) == pytest.approx(0.01)
    assert at_size(0.01, 100, 1000) == pytest.approx(1 - 0.99**10)
    assert at_size(at_size(0.02, 300, 50), 50, 300) == pytest.approx(0.02)


def trials() -> Trials:
    scores = np.linspace(0.0, 0.999, 1000)
    rng = np.random.default_rng(0)
    return Trials(scores.astype(np.float32), rng.random(200) < 0.9, rng.uniform(0.2, 1.0, 200).astype(np.float32))


def test_the_points_are_the_chosen_threshold_its_neighbours_and_the_model_s():
    t = trials()
    estimator = Empirical(t.nonmated, t.threshold_for)
    found = {p.label: p for p in points(estimator, lambda x: t.rates(x).fnir, 0.02, 0.5)}
    assert set(found) == {"stricter", "chosen", "looser", "model"}
    assert found["stricter"].threshold > found["chosen"].threshold > found["looser"].threshold
    assert (found["stricter"].fpir, found["chosen"].fpir, found["looser"].fpir) == pytest.approx((0.01, 0.02, 0.04))
    assert found["model"].fpir == pytest.approx(0.5) and found["model"].fnir == t.rates(0.5).fnir
    for p in found.values():
        assert p.fpir_low <= p.fpir <= p.fpir_high


def test_a_rate_is_read_back_from_the_curve_within_the_range_the_trials_support():
    t = trials()
    rows = curve(Empirical(t.nonmated, t.threshold_for), lambda x: t.rates(x).fnir)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)  # FPIR falls as thresholds rise
    for target in (0.003, 0.01, 0.1, 0.4):
        chosen = threshold_for_rate(rows, target)
        assert float((t.nonmated >= chosen).mean()) == pytest.approx(target, rel=0.35)
    with pytest.raises(InvalidValue, match="between 0.001 and 0.5"):
        threshold_for_rate(rows, 1e-4)  # below one trial in a thousand


def test_the_span_of_rates_said_holds_only_rates_it_answers():
    from indexer.rates import rate_span

    assert rate_span(0.00567, 0.49999964) == "between 0.0057 and 0.49"
    assert rate_span(0.0057, 0.5) == "between 0.0057 and 0.5"
