"""Pairs of identities a person has confirmed are different people, kept with the collection.

Why: the gallery check lists two names whose faces look like one person. When a person looks and says "these
are two people" (twins, a father and son, two look-alikes), the pair must stop being listed, and its scores are
then the strongest impostor evidence the gallery has: a calibration that set them aside as a duplicate would let
those very two people match each other. Both the check (indexer/health.py) and the tail calibration read these.

Kept as a collection property beside the calibration (small: a few thousand pairs at most), and carried to a
re-embed's new collection at its switch (jobs/pipelines/reembed.py), since it is about people, not a model.
"""

from __future__ import annotations

import json

from indexer.errors import InvalidValue
from indexer.ids import validate_identity
from indexer.milvus import Property

MAX_PAIRS = 5000  # the whole list is one property string (5,000 pairs: about 200 KB); people confirm far fewer

Pairs = frozenset[frozenset[str]]


def pairs(index) -> Pairs:
    """The confirmed pairs (read afresh: another process may have added one)."""
    try:
        stored = json.loads(index.properties().get(Property.DISTINCT) or "[]")
    except json.JSONDecodeError:
        stored = []
    return frozenset(frozenset(p) for p in stored if isinstance(p, list) and len(set(p)) == 2)


def _keep(index, found: Pairs) -> None:
    text = json.dumps(sorted(sorted(p) for p in found), ensure_ascii=False, separators=(",", ":"))
    index.set_properties({Property.DISTINCT: text})


def add(index, first: str, second: str) -> Pairs:
    """Say `first` and `second` are different people; returns every pair now kept."""
    first, second = validate_identity(first), validate_identity(second)
    if first == second:
        raise InvalidValue("a pair of different people needs two different identities")
    found = pairs(index)
    if len(found) >= MAX_PAIRS and frozenset((first, second)) not in found:
        raise InvalidValue(f"at most {MAX_PAIRS} pairs of different people are kept per gallery")
    found = found | {frozenset((first, second))}
    _keep(index, found)
    return found


def forget(index, first: str, second: str) -> None:
    """`first` and `second` are one person after all (a merge a person insisted on): their pair is kept no more."""
    found = pairs(index)
    if frozenset((first, second)) in found:
        _keep(index, found - {frozenset((first, second))})


def copy(source, target) -> int:
    """The source collection's pairs onto the target's (a re-embed's switch); returns how many."""
    found = pairs(source)
    if found:
        _keep(target, found | pairs(target))
    return len(found)
