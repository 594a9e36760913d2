from indexer.decision import aggregate, decide
from indexer.store import Hit


def hits(*pairs):
    return [Hit(i, identity, score, f"s{i}") for i, (identity, score) in enumerate(pairs)]


def test_best_identity_above_threshold_is_a_match():
    d = decide(hits(("ann", 0.8), ("bob", 0.6), ("ann", 0.5)), threshold=0.7)
    assert d.is_match and d.identity == "ann" and d.score == 0.8
    assert [c.identity for c in d.candidates] == ["ann", "bob"]
    assert d.candidates[0].face_ids == (0, 2)


def test_below_threshold_is_unknown_but_keeps_candidates():
    d = decide(hits(("ann", 0.69),), threshold=0.7)
    assert not d.is_match and d.identity is None and d.candidates[0].identity == "ann"


def test_threshold_is_inclusive():
    assert decide(hits(("ann", 0.7),), threshold=0.7).identity == "ann"


def test_empty_gallery_is_unknown():
    d = decide([], threshold=0.3)
    assert d.identity is None and d.candidates == ()


def test_mean_of_top_n_changes_the_ranking():
    h = hits(("ann", 0.9), ("ann", 0.3), ("bob", 0.8), ("bob", 0.75))
    assert aggregate(h, top_n=1)[0].identity == "ann"
    best = aggregate(h, top_n=2)[0]
    assert best.identity == "bob" and abs(best.score - 0.775) < 1e-9
