"""A chaining method's edge threshold raised to where its clusters agree with Chinese whispers': above the stranger
edges that chain people, never above the same person's part, and the reference itself left where it was."""

import numpy as np

from indexer.clustering import Graph, bcubed
from indexer.method_threshold import raised_threshold, thresholds_between

PEOPLE, PHOTOS = 20, 10
BRIDGE = 0.80  # one stranger edge from each person to the next: above the start, below most of a person's own


def bridged_people(seed: int = 0) -> tuple[Graph, np.ndarray]:
    """Twenty people of ten photos, every pair of a person's photos at 0.85 +- 0.03, and one stranger edge at 0.80
    joining each person to the next: connected components at 0.75 make one cluster of everybody."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(PEOPLE), PHOTOS)
    first, second = np.triu_indices(PHOTOS, k=1)
    src = np.concatenate([p * PHOTOS + first for p in range(PEOPLE)] + [np.arange(PEOPLE - 1) * PHOTOS])
    dst = np.concatenate([p * PHOTOS + second for p in range(PEOPLE)] + [np.arange(1, PEOPLE) * PHOTOS + 1])
    weight = np.concatenate([rng.normal(0.85, 0.03, PEOPLE * len(first)), np.full(PEOPLE - 1, BRIDGE)])
    return Graph.from_edges(PEOPLE * PHOTOS, src, dst, weight.astype(np.float32), -1.0), truth


def test_connected_components_rise_above_the_bridges_and_find_every_person():
    graph, truth = bridged_people()
    raised = raised_threshold(graph, 0.75, 0.85, "connected")
    assert BRIDGE < raised.threshold <= 0.85
    assert bcubed(truth, raised.labels)[2] == 1.0 and raised.agreement == 1.0
    at_start = raised_threshold(graph, 0.75, 0.75, "connected")  # no room to rise: it stays, and chains
    assert at_start.threshold == 0.75 and len(np.unique(at_start.labels)) == 1


def test_a_method_that_already_agrees_stays_at_the_start_and_so_does_chinese_whispers():
    graph, truth = bridged_people(1)
    leiden = raised_threshold(graph, 0.75, 0.85, "leiden")  # one bridge a person: modularity outvotes it
    assert leiden.threshold == 0.75 and leiden.agreement == 1.0 and leiden.tried > 1
    same = raised_threshold(graph, 0.75, 0.85, "chinese-whispers")
    assert same.threshold == 0.75 and same.tried == 1 and bcubed(truth, same.labels)[2] == 1.0


def test_the_grid_runs_from_the_start_to_the_stop():
    assert thresholds_between(0.5, 0.6, 0.025) == [0.5, 0.525, 0.55, 0.575, 0.6]
    assert thresholds_between(0.5, 0.4, 0.025) == [0.5]
