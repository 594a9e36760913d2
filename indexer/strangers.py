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
  score against some identity is so far out in the tail of the gallery's own faces that fewer than
  DUPLICATE_ALPHA such stranger-identity pairs are expected by chance is taken for that person and dropped: the
  same test that sets a duplicate enrollment aside. The tail is the one fitted without the strangers: fitted
  with them, 25 staff photos among 500 unlabelled faces of a 100-person LFW-gray gallery widened it until none
  looked enrolled, and the threshold kept out every stranger and most of the enrolled (FPIR 0.00% reached for a
  1% target in 20 of 20 draws; judged by the gallery alone, 0.79%, 14 of 20 within 2x).
- That test also drops strangers who merely resemble someone enrolled (relatives, look-alikes), and they are
  what a 0.1% promise is made of: faces their owner confirms are nobody who will be enrolled (`ingest
  --strangers`, metadata CONFIRMED: a public photo set of the same kind, visitors) are never dropped, and from
  MIN_DIRECT of them on the rate at the gallery's size is read off them directly (tail.directly).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from indexer.tail import DUPLICATE_ALPHA, Pairs, TailModel, fit_scores, identity_scores

CONFIRMED = "stranger"  # metadata of a face that is nobody who will be enrolled (embedder.sources.STRANGER)
# the most the tail judging them may be bounded (GPD shape). At 100 LFW-gray people with 500 strangers, 5% of them
# enrolled people's other photos, the gallery's own fits ran k = 0.08-0.34: uncapped they dropped up to 57 true
# strangers in a draw, capped at 0 (an exponential tail) they kept 90% of the enrolled's photos, at 0.2 they found
# 88% and dropped 3 true strangers in the median draw (docs/BENCHMARKS.md)
JUDGE_SHAPE = 0.2
STRANGERS = 2000  # unlabelled faces drawn at most: beyond a few hundred they add little (the gallery's own spread)


def ingested_unlabelled(index, rng: np.random.Generator, limit: int = STRANGERS) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors of up to `limit` random unlabelled faces that were ingested, not kept from searches; whether
    each is a confirmed stranger: metadata CONFIRMED, `ingest --strangers`)."""
    ids = np.fromiter((f for f, _ in index.unlabelled_faces()), dtype=np.int64)
    drawn = [int(i) for i in rng.permutation(ids)[: 2 * limit]]
    metadata = index.stored_metadata(drawn) if drawn else {}
    ingested = [i for i in drawn if "expires_at" not in (metadata.get(i) or {})][:limit]
    vectors = index.vectors(ingested) if ingested else {}
    kept = [i for i in ingested if i in vectors]  # deleted since the scan: not there
    confirmed = np.array([(metadata.get(i) or {}).get(CONFIRMED) is True for i in kept], dtype=bool)
    if not kept:
        return np.zeros((0, index.info().dim), np.float32), confirmed
    return np.stack([vectors[i] for i in kept]), confirmed


def fit_with_strangers(vectors: np.ndarray, labels: np.ndarray, probes: np.ndarray, distinct: Pairs,
                       strangers: np.ndarray, drop: bool = True, confirmed: np.ndarray | None = None
                       ) -> tuple[TailModel, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """fit_gallery with the strangers, those that look like an enrolled identity dropped first (`drop`), never
    one `confirmed` (a flag per stranger); also returns which strangers were dropped. They are judged by the
    gallery's model without them (lookalike): judged by a model fitted with them, enrolled people's photos among
    them widen the very tail that should expose them."""
    scores, names, own = identity_scores(vectors, labels, probes, strangers=strangers)
    rows = np.flatnonzero(own < 0)
    dropped = np.zeros(len(rows), bool)
    if drop and len(rows):
        dropped = lookalike(fit_scores(scores[own >= 0], names, own[own >= 0], distinct=distinct)[0], scores[rows])
        if confirmed is not None:
            dropped &= ~np.asarray(confirmed, bool)
        keep = ~np.isin(np.arange(len(own)), rows[dropped])
        scores, own = scores[keep], own[keep]
    model, evidence, names, own = fit_scores(scores, names, own, distinct=distinct)
    return model, evidence, names, own, dropped


def lookalike(alone: TailModel, rows: np.ndarray) -> np.ndarray:
    """Which strangers' rows (scores against the gallery's identities) are so far out in the tail of the gallery
    `alone` that fewer than DUPLICATE_ALPHA such stranger-identity pairs are expected by chance: taken for an
    enrolled person's photo. The tail's shape is capped at JUDGE_SHAPE: a light tail fitted to a small gallery
    ends too soon (a GPD with shape k > 0 stops at alpha / k beyond its start) and would call a stranger's
    ordinary best score impossible."""
    judge = replace(alone, k=min(alone.k, JUDGE_SHAPE))
    z = np.nanmax(judge.standardised(rows), axis=1)
    return rows.shape[0] * rows.shape[1] * judge.survival(z) < DUPLICATE_ALPHA
