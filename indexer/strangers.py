"""The gallery's unlabelled faces as extra impostor evidence for the tail calibration.

Why: at 100 people the gallery holds about one pair of scores beyond the threshold FPIR 1% must place, so any
tail fitted to it extrapolates; 500 faces of people not enrolled, each scored against every identity, took the
FPIR reached at 100 LFW-gray people from 0.10-7.78% to 0.18-1.83% (docs/BENCHMARKS.md, "A gallery calibration one
pair cannot move"). A gallery often has such faces: photos ingested with `--unlabelled`.

Which ones:
- Faces kept from searches (ARCMATCH_KEEP_UNKNOWN_FACES; they carry `expires_at`) are not read as ingested ones:
  each was kept because it scored below the threshold of its day (their metadata's `below`), so they are strangers
  with their highest scores cut off, and read as if whole they place the next threshold too low (1.2-1.9% reached
  for a 1% target on LFW-gray where only strangers searched); the enrolled people it missed are kept too and pull
  the other way (0.28-0.53% reached, read with the cut, where half the searches were theirs). So they are read only
  once a person has named the enrolled among them and confirmed the rest (`arcmatch gallery stranger --kept`),
  with the cut taken into account (tail.truncated), and only where fewer than MIN_STRANGERS ingested unlabelled
  faces are at hand (bench/kept_faces.py, docs/BENCHMARKS.md).
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

import re
import time
from dataclasses import dataclass, replace

import numpy as np

from common.errors import Conflict, NotFound
from indexer.ids import BELOW, BELOW_MODEL, EXPIRES_AT, REJECTED_FROM, STRANGER, UNLABELLED
from indexer.tail import DUPLICATE_ALPHA, JUDGE_SHAPE, Pairs, TailModel, fit_scores, identity_scores

KEPT = EXPIRES_AT  # metadata of a face kept from a search (jobs/service.py keep_unknown)
KEPT_SOURCE = re.compile(r"^search:[0-9a-f]{16}#\d+$")  # ... and its source
CONFIRMED = STRANGER  # metadata of a face that is nobody who will be enrolled
SHOWN = 20  # unlabelled faces set aside that a calibration lists
STRANGERS = 2000  # unlabelled faces drawn at most: beyond a few hundred they add little (the gallery's own spread)


@dataclass(frozen=True)
class Unlabelled:
    """Unlabelled faces drawn as strangers: unit vectors, whether each is confirmed (metadata CONFIRMED, `ingest
    --strangers`), and where each came from (what a person needs to tell whether one set aside is a stranger)."""

    vectors: np.ndarray
    confirmed: np.ndarray
    sources: list[str]
    face_ids: list[int]  # what the review page shows each by (its archived picture)
    rejected: list[frozenset[str]] | None = None  # whom a person said each is not ("not this person")
    cut: float | None = None  # kept from searches: the threshold below which they all scored (kept_strangers)
    counts: dict | None = None  # ... and how many were looked at, left out and why (kept_strangers)
    unjudged: Unlabelled | None = None  # ... and those nobody has confirmed yet, within their retention

    def subset(self, rows: list[int], **fields) -> Unlabelled:
        """These rows of the faces (indices), with `fields` set."""
        return Unlabelled(self.vectors[rows], self.confirmed[rows], [self.sources[n] for n in rows],
                          [self.face_ids[n] for n in rows], [(self.rejected or [])[n] for n in rows], **fields)


def ingested_unlabelled(index, rng: np.random.Generator, limit: int = STRANGERS,
                        faces: dict[int, str] | None = None) -> Unlabelled:
    """Up to `limit` random unlabelled faces that were ingested, not kept from searches. `faces`: the gallery's
    unlabelled faces (id: source) where the caller scanned them already."""
    return _drawn(index, rng, limit, kept=False, wanted=lambda metadata: KEPT not in metadata, faces=faces)[0]


def kept_strangers(index, rng: np.random.Generator, limit: int = STRANGERS, now: float | None = None,
                   faces: dict[int, str] | None = None) -> Unlabelled:
    """Up to `limit` random faces kept from searches that a person confirmed are strangers, with `cut`: the
    threshold most of them were answered unknown under (their `below`), and `counts` of what was left out and
    why. Left out: faces past their retention (the service deletes them only now and then), faces answered under
    another model (a cosine of the model before a re-embed), and those answered under a lower threshold than the
    cut (a caller's own), as the others of those searches that scored between it and the cut were never kept.
    Read with the cut taken into account (tail.truncated). Unconfirmed ones are not read: the enrolled people a
    threshold missed are kept too, and where half the searches were theirs a reading of every kept face reached
    0.28-0.53% for a 1% target. The unconfirmed ones come along as `unjudged` (unjudged_nearest)."""
    now = time.time() if now is None else now
    model = index.info().model_version
    drawn, metadata = _drawn(index, rng, limit, kept=True, wanted=lambda m: KEPT in m, faces=faces)
    counts = {"kept": len(drawn.face_ids), "expired": 0, "unconfirmed": 0, "other_model": 0, "laxer": 0}
    usable, unjudged = [], []
    for n, face in enumerate(drawn.face_ids):
        held = metadata[face]
        if not isinstance(held.get(KEPT), (int, float)) or held[KEPT] < now:
            counts["expired"] += 1
        elif held.get(CONFIRMED) is not True:
            counts["unconfirmed"] += 1
            unjudged.append(n)
        elif held.get(BELOW_MODEL, model) != model or not isinstance(held.get(BELOW), (int, float)):
            counts["other_model"] += 1
        else:
            usable.append(n)
    below = np.array([float(metadata[drawn.face_ids[n]][BELOW]) for n in usable])
    cut = None
    if len(usable):
        values, times = np.unique(below, return_counts=True)
        cut = float(values[np.argmax(times)])
        counts["laxer"] = int((below < cut).sum())
        usable = [n for n, b in zip(usable, below, strict=True) if b >= cut]
    counts["confirmed"] = len(usable)
    return drawn.subset(usable, cut=cut, counts=counts, unjudged=drawn.subset(unjudged))


def _drawn(index, rng: np.random.Generator, limit: int, *, kept: bool, wanted,
           faces: dict[int, str] | None = None) -> tuple[Unlabelled, dict[int, dict]]:
    """Up to `limit` random unlabelled faces whose metadata is `wanted`, and the metadata read; among those kept
    from searches (`kept`, told by their source first, so that thousands of them do not crowd out a hundred
    ingested ones in the draw) or the others. `faces`: the unlabelled faces (id: source), scanned here if None."""
    scanned = faces.items() if faces is not None else index.unlabelled_faces()
    source = {face: name for face, name in scanned if bool(KEPT_SOURCE.match(name)) == kept}
    ids = np.fromiter(source, dtype=np.int64, count=len(source))
    drawn = [int(i) for i in rng.permutation(ids)[: 2 * limit]]
    metadata = index.stored_metadata(drawn) if drawn else {}
    chosen = [i for i in drawn if wanted(metadata.get(i) or {})][:limit]
    vectors = index.vectors(chosen) if chosen else {}
    chosen = [i for i in chosen if i in vectors]  # deleted since the scan: not there
    confirmed = np.array([(metadata.get(i) or {}).get(CONFIRMED) is True for i in chosen], dtype=bool)
    stacked = np.stack([vectors[i] for i in chosen]) if chosen else np.zeros((0, index.info().dim), np.float32)
    rejected = [frozenset((metadata.get(i) or {}).get(REJECTED_FROM) or ()) for i in chosen]
    return Unlabelled(stacked, confirmed, [str(source[i]) for i in chosen], chosen, rejected), metadata


def unlabelled_from(index, sources: list[str], nothing: str) -> dict[int, str]:
    """The unlabelled faces that came from `sources` (face id: source): what a person names or confirms from the
    list `calibrate` gives. NotFound, saying `nothing` was done, where a source is no unlabelled face."""
    wanted = set(sources)
    ids = {face: source for face, source in index.unlabelled_faces() if source in wanted}
    missing = wanted - set(ids.values())
    if missing:
        raise NotFound(f"no unlabelled face comes from {', '.join(repr(s) for s in sorted(missing)[:3])}"
                       + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
                       + f": {nothing} (the sources `arcmatch calibrate` lists)")
    return ids


def confirm(writer, sources: list[str], threshold: float | None = None, proceed: bool = False) -> list[int]:
    """Mark the unlabelled faces that came from `sources` as confirmed strangers (metadata CONFIRMED): what `ingest
    --strangers` does at ingestion, for faces a calibration set aside (set_aside) that a person knows are nobody
    enrolled. Through the gallery's writer (indexer.writer.GalleryWriter): the archive keeps the mark, so a
    re-embed carries it. Returns their face ids; NotFound, with nothing marked, where a source is no unlabelled
    face. Conflict, with nothing marked, where a face scores at or above `threshold` (the gallery's, where the
    caller has one) with someone enrolled, unless `proceed`: searches answer it as that person, and a confirmed
    stranger that is an enrolled person's photo would hold the next threshold above that person's own scores (a
    QA pass: a photo of Kim Ryong-sung at 0.83 with his, confirmed by mistake, moved it from 0.499 to 0.506)."""
    found = unlabelled_from(writer.index, sources, "nothing marked")
    if threshold is not None and not proceed and found:
        vectors = writer.index.vectors(list(found))
        faces = [f for f in found if f in vectors]
        hits = writer.index.search(np.stack([vectors[f] for f in faces]), k=1) if faces else []
        matched = [(found[f], h[0]) for f, h in zip(faces, hits, strict=True) if h and h[0].score >= threshold]
        if matched:
            named = "; ".join(f"{source}: {hit.identity!r} at {hit.score:.3f}" for source, hit in matched[:5])
            raise Conflict(f"{len(matched)} of these faces match someone enrolled at or above the threshold "
                           f"{threshold:.3f} ({named}{' ...' if len(matched) > 5 else ''}): name them (`arcmatch "
                           "gallery name`), or say proceed (`--proceed`, proceed=true) if they are strangers all "
                           "the same; nothing marked")
    return _marked(writer, list(found))


def confirm_kept(writer, now: float | None = None) -> tuple[list[int], int]:
    """Mark every face kept from searches that is still unlabelled, and within its retention, as a confirmed
    stranger: what a person says once the enrolled people among them are named (the review page, `arcmatch
    gallery name`). Returns their ids, and how many were confirmed already."""
    now = time.time() if now is None else now
    index = writer.index
    ids = [face for face, source in index.unlabelled_faces() if KEPT_SOURCE.match(source)]
    metadata = index.stored_metadata(ids) if ids else {}
    live = [i for i in ids if isinstance((metadata.get(i) or {}).get(KEPT), (int, float)) and metadata[i][KEPT] >= now]
    fresh = [i for i in live if metadata[i].get(CONFIRMED) is not True]
    return _marked(writer, fresh), len(live) - len(fresh)


def _marked(writer, faces: list[int]) -> list[int]:
    """`faces` (unlabelled) confirmed strangers, archive and store."""
    rows = writer.index.rows(faces) if faces else {}
    if rows:
        writer.rename([replace(row, metadata={**(row.metadata or {}), CONFIRMED: True}) for row in rows.values()])
        writer.index.flush()
    return sorted(rows)


def unjudged_nearest(kept: Unlabelled, vectors: np.ndarray, labels: np.ndarray, shown: int = SHOWN) -> list[dict]:
    """The faces kept from searches that nobody has judged yet (kept_strangers' `unjudged`), those most like
    someone enrolled first (at most `shown`), as set_aside gives its faces: where the enrolled people a threshold
    missed are, for a person to name before confirming the rest (`gallery stranger --kept`). Without this list
    they hide among hundreds of one-face clusters that the review page does not show."""
    unjudged = kept.unjudged
    if unjudged is None or not len(unjudged.vectors) or not len(vectors):
        return []
    return set_aside(unjudged, np.ones(len(unjudged.vectors), bool), vectors, labels, shown)


def set_aside(unlabelled: Unlabelled, dropped: np.ndarray, vectors: np.ndarray, labels: np.ndarray,
              shown: int = SHOWN) -> list[dict]:
    """The unlabelled faces dropped as looking enrolled, the most alike first (at most `shown`): where each came
    from, whom it looks like and how much. Either that person's photo (name it: `arcmatch gallery name`) or a
    stranger who resembles them (confirm it: `arcmatch gallery stranger`): only a person can tell, and the
    look-alikes are what a strict promise is made of."""
    rows = np.flatnonzero(dropped)
    if not len(rows):
        return []
    scores = unlabelled.vectors[rows] @ vectors.T
    best = scores.argmax(axis=1)
    found = [{"source": unlabelled.sources[r], "face_id": int(unlabelled.face_ids[r]), "like": str(labels[b]),
              "score": round(float(scores[i, b]), 4)} for i, (r, b) in enumerate(zip(rows, best, strict=True))]
    return sorted(found, key=lambda f: -f["score"])[:shown]


def now(index, set_aside_faces: list[dict]) -> list[dict]:
    """The faces a calibration set aside as they are now, each with `now`: "unlabelled" (still to be judged),
    "stranger" (confirmed since), "named" (with `identity`: it was that person's photo after all) or "gone"
    (erased). A stored calibration keeps its list until the next one; a person judging it should see only what is
    left to judge."""
    ids = [int(f["face_id"]) for f in set_aside_faces if f.get("face_id") is not None]
    rows = index.rows(ids) if ids else {}
    out = []
    for found in set_aside_faces:
        row = rows.get(int(found["face_id"])) if found.get("face_id") is not None else None
        if row is None:
            out.append({**found, "now": "gone" if found.get("face_id") is not None else "unlabelled"})
        elif row.identity != UNLABELLED:
            out.append({**found, "now": "named", "identity": row.identity})
        else:
            out.append({**found, "now": "stranger" if (row.metadata or {}).get(CONFIRMED) is True else "unlabelled"})
    return out


def fit_with_strangers(vectors: np.ndarray, labels: np.ndarray, probes: np.ndarray, distinct: Pairs,
                       strangers: np.ndarray, drop: bool = True, confirmed: np.ndarray | None = None,
                       rejected: list[frozenset[str]] | None = None
                       ) -> tuple[TailModel, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """fit_gallery with the strangers, those that look like an enrolled identity dropped first (`drop`), never
    one `confirmed` (a flag per stranger), nor one a person took out of the very identity it looks like
    (`rejected`: "not this person", so a look-alike, the evidence a strict threshold needs); also returns which
    strangers were dropped. They are judged by the gallery's model without them (lookalike): judged by a model
    fitted with them, enrolled people's photos among them widen the very tail that should expose them."""
    scores, names, own = identity_scores(vectors, labels, probes, strangers=strangers)
    rows = np.flatnonzero(own < 0)
    dropped = np.zeros(len(rows), bool)
    if drop and len(rows):
        dropped = lookalike(fit_scores(scores[own >= 0], names, own[own >= 0], distinct=distinct)[0], scores[rows])
        if confirmed is not None:
            dropped &= ~np.asarray(confirmed, bool)
        if rejected is not None and dropped.any():
            like = np.asarray(names)[np.nanargmax(np.where(np.isnan(scores[rows]), -np.inf, scores[rows]), axis=1)]
            dropped &= ~np.array([str(n) in r for n, r in zip(like, rejected, strict=True)], dtype=bool)
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
