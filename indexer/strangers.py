"""The gallery's unlabelled faces as extra impostor evidence for the tail calibration.

Why: at 100 people the gallery holds about one pair of scores beyond the threshold FPIR 1% must place, so any
tail fitted to it extrapolates; 500 faces of people not enrolled, each scored against every identity, took the
FPIR reached at 100 LFW-gray people from 0.10-7.78% to 0.18-1.83% (docs/BENCHMARKS.md, "A gallery calibration one
pair cannot move"). A gallery often has such faces: photos ingested with `--unlabelled`.

Which ones:
- Faces kept from searches (ARCMATCH_KEEP_UNKNOWN_FACES; they carry `expires_at`) are left out: each was kept
  because it scored below the threshold of its day, so they are strangers with their highest scores cut off, and
  a tail read from them would place the next threshold too low.
- An unlabelled face may be an enrolled person's photo (an event's photos include the staff). One whose best
  score against some identity is so far out in the tail fitted with them that fewer than DUPLICATE_ALPHA such
  stranger-identity pairs are expected by chance is taken for that person and dropped, and the model fitted
  again without it: the same test that sets a duplicate enrollment aside.
"""

from __future__ import annotations

import numpy as np

from indexer.tail import DUPLICATE_ALPHA, Pairs, TailModel, fit_gallery, fit_scores

STRANGERS = 2000  # unlabelled faces drawn at most: beyond a few hundred they add little (the gallery's own spread)


def ingested_unlabelled(index, rng: np.random.Generator, limit: int = STRANGERS) -> np.ndarray:
    """Unit vectors of up to `limit` random unlabelled faces that were ingested, not kept from searches."""
    ids = np.fromiter((f for f, _ in index.unlabelled_faces()), dtype=np.int64)
    drawn = [int(i) for i in rng.permutation(ids)[: 2 * limit]]
    metadata = index.stored_metadata(drawn) if drawn else {}
    ingested = [i for i in drawn if "expires_at" not in (metadata.get(i) or {})][:limit]
    vectors = index.vectors(ingested) if ingested else {}
    kept = [vectors[i] for i in ingested if i in vectors]  # deleted since the scan: not there
    return np.stack(kept) if kept else np.zeros((0, index.info().dim), np.float32)


def fit_with_strangers(vectors: np.ndarray, labels: np.ndarray, probes: np.ndarray, distinct: Pairs,
                       strangers: np.ndarray, rounds: int = 3) -> tuple[TailModel, np.ndarray, np.ndarray, np.ndarray,
                                                                      int]:
    """fit_gallery with the strangers, those that look like an enrolled identity dropped (found, dropped and
    fitted again up to `rounds` times: several of them in the evidence widen the tail that should expose them);
    also returns how many were dropped."""
    model, evidence, names, own = fit_gallery(vectors, labels, probes, distinct=distinct, strangers=strangers)
    dropped = 0
    for _ in range(rounds):
        rows = np.flatnonzero(own < 0)
        if not len(rows):
            break
        z = (evidence[rows] - model.location[rows, None]) / model.spread[rows, None]
        expected = len(rows) * evidence.shape[1] * model.survival(np.nanmax(z, axis=1))  # stranger-identity pairs
        alike = rows[expected < DUPLICATE_ALPHA]
        if not len(alike):
            break
        keep = ~np.isin(np.arange(len(own)), alike)
        model, evidence, names, own = fit_scores(evidence[keep], names, own[keep], distinct=distinct)
        dropped += len(alike)
    return model, evidence, names, own, dropped
