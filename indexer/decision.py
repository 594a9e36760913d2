"""The one-shot decision: aggregate face hits per identity and accept the best only above a threshold.

Scores are cosine similarities (higher is closer) and a threshold is always a cosine similarity: a probe is
"identity X" when X's score >= threshold, otherwise "unknown".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from indexer.errors import InvalidValue
from indexer.store import Hit


@dataclass(frozen=True)
class Candidate:
    identity: str
    score: float
    face_ids: tuple[int, ...]


@dataclass(frozen=True)
class Decision:
    identity: str | None  # None means unknown
    score: float  # the best candidate's score (or -1 when the gallery is empty)
    threshold: float
    candidates: tuple[Candidate, ...]

    @property
    def is_match(self) -> bool:
        return self.identity is not None


def aggregate(hits: list[Hit], top_n: int = 1) -> list[Candidate]:
    """Per identity, the mean of its top_n face scores (top_n=1: its best face), best identity first."""
    if top_n < 1:
        raise InvalidValue(f"top_n must be at least 1, got {top_n}")
    by_identity: dict[str, list[Hit]] = defaultdict(list)
    for hit in hits:
        by_identity[hit.identity].append(hit)
    candidates = []
    for identity, faces in by_identity.items():
        faces.sort(key=lambda h: h.score, reverse=True)
        best = faces[:top_n]
        candidates.append(Candidate(identity, sum(h.score for h in best) / len(best),
                                    tuple(h.face_id for h in faces)))
    candidates.sort(key=lambda c: c.score, reverse=True)
    return candidates


def decide(hits: list[Hit], threshold: float, top_n: int = 1) -> Decision:
    candidates = aggregate(hits, top_n)
    if not candidates:
        return Decision(None, -1.0, threshold, ())
    best = candidates[0]
    return Decision(best.identity if best.score >= threshold else None, best.score, threshold, tuple(candidates))
