"""What is wrong with a gallery's labels, read off its own vectors: one person under two names, photos that look
like someone other than the rest of their identity, photos that look like no one else of their identity (a
stranger's photo filed under a name, or a photo moved there whose person the pair test does not single out), two
people under one name (a wrong merge: each photo has a partner, so none of it looks astray), identities with no
face that passes the quality gate.

Why: every such finding is a false match waiting to happen (two names for one face), or a miss (a photo that is
someone else), and each of them also bends a threshold calibrated on the gallery. People fix them best; this says
where to look, with the faces and scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from common.names import shown
from indexer.ids import CONFIRMED_IN  # a face's metadata: the identity a person confirmed it shows ("It is NAME")
from indexer.tail import MIN_IDENTITIES, Pairs, Suspect, fit_scores, identity_scores, suspected_duplicates

# A pair is listed when fewer than this many pairs of strangers would be as far out in the tail by chance. Two
# strictnesses: a pair that one of its photos backs (a photo nearer the other name's faces than its own
# identity's other faces: a mislabel, or one person under two names) is worth a look from REVIEW_ALPHA; a pair
# only near in score, whose photos all sit with their own identity, from STRICT_ALPHA, as strangers' chance
# pairs look like that. Measured on LFW-gray (bench/gallery_check.py, docs/BENCHMARKS.md).
REVIEW_ALPHA = 1.0
STRICT_ALPHA = 0.1
# A photo is listed as unlike its identity when one stranger's identity in ten, or more, would score as high with it
# as the rest of its identity does (the tail model's chance for one identity; its identity has two or more other
# photos, which then speak for who the person is). On LFW-gray with two photos each, 2% moved and 2% strangers'
# photos filed under names, 800 people, 20 draws: moved photos listed 75% -> 100% (worst draw 87.5%), strangers'
# photos 0 -> 84%, 0.5 photos nobody planted a gallery; with three photos each, 3 of 900 (bench/gallery_check.py
# --outsiders, docs/BENCHMARKS.md). At 0.02-0.05 a few more strangers' photos, and more nobody planted
STRAY_CHANCE = 0.1
# An identity is two people when its photos fall into groups of two or more whose photos each match one of their
# own group's beyond what this share of strangers' identities would score, and none of another group's as high.
# A wrong merge's two people then stay apart unless one of their cross pairs scores as high as one stranger in a
# hundred would (each such pair's chance, read both ways); one person's photos stay one group unless a pair of its
# photos matches no other of its photos at that level (bench/gallery_check.py --merged, docs/BENCHMARKS.md)
SPLIT_LINK = 0.01
# Two names whose faces score this high share a photo (the same picture filed twice, or a copy of it): found at any
# gallery size, with no tail to fit, as no two people's photos score so. The same photo through the same model
# scores 1.0000 (jobs/pipelines/sink.py); the highest pair of different photos in all of LFW-gray under two names
# that are one person scored 0.98, and the demo's weak synthetic model gives strangers 0.91 at most
SAME_PHOTO = 0.98


@dataclass(frozen=True)
class Misfit:
    """A face that scores higher against another identity than against the rest of its own, so high that the
    two identities look like one person (a mislabelled photo)."""

    face_id: int
    identity: str
    own_best: float  # its best score against the other faces of its identity
    other: str
    other_best: float
    source: str = ""  # the photo it came from, as enrolled (check_index fills it in)


@dataclass(frozen=True)
class Stray:
    """A face its own identity's other photos score no higher with than one stranger in `chance` would: someone
    else's photo under this name (a stranger's, or a photo moved here from someone the other findings miss)."""

    face_id: int
    identity: str
    own_best: float  # its best score against the other faces of its identity
    chance: float  # the share of strangers' identities that would score as high with it (the tail model)
    source: str = ""  # the photo it came from, as enrolled (check_index fills it in)


@dataclass(frozen=True)
class Split:
    """An identity whose photos fall into groups, each of one person (its photos match each other as strangers
    rarely do) and no group's photos matching another's as high: two people under one name (a wrong merge, or two
    people enrolled under one name). Moving the smaller groups' faces to names of their own resolves it."""

    identity: str
    groups: tuple[tuple[int, ...], ...]  # face ids, the largest group first
    cross_best: float  # the best score between photos of two groups
    chance: float  # the share of strangers' identities that would score as high with one of that pair's photos
    sources: tuple[tuple[str, ...], ...] = ()  # each group's photos, as enrolled (check_index fills them in)


@dataclass
class Health:
    identities: int
    faces: int
    duplicates: list = field(default_factory=list)  # indexer.tail.Suspect
    misfits: list[Misfit] = field(default_factory=list)
    strays: list[Stray] = field(default_factory=list)
    splits: list[Split] = field(default_factory=list)
    below_gate: list[str] = field(default_factory=list)  # identities with no face that passed the gate
    notes: list[str] = field(default_factory=list)

    def _misfiled(self, pair) -> str:
        if pair.misfiled is None:
            return ""
        photo = next((m for m in self.misfits if m.face_id == pair.misfiled), None)
        if photo is None:
            return f": made by one photo, face {pair.misfiled}; move it rather than merge the two"
        move = f"arcmatch gallery move {photo.face_id} --from {shown(photo.identity)} --to {shown(photo.other)}"
        return (f": made by one photo, face {photo.face_id}{_from(photo.source)} under {shown(photo.identity)}; if "
                f"it shows {shown(photo.other)}, move it (`{move}`); merge the two only if the rest of "
                f"{shown(photo.identity)} is that person too")

    def _pair(self, s) -> str:
        said = ("one photo under both names" if s.same_photo else
                f"strangers would give {_expected(s.expected_among_strangers)} such pairs")
        return f"  {shown(s.first)} and {shown(s.second)}: best cross score {s.score:.3f} ({said})" + self._misfiled(s)

    def as_json(self) -> dict:
        """The findings as the API answers them (`GET /v1/gallery/check`) and `gallery check --json` prints them: face
        ids as strings, as int64 ids are beyond the integers a JSON reader that holds numbers as doubles keeps."""
        found = asdict(self)
        for kind in ("misfits", "strays"):
            found[kind] = [{**m, "face_id": str(m["face_id"])} for m in found[kind]]
        found["duplicates"] = [{**d, "misfiled": None if d["misfiled"] is None else str(d["misfiled"])}
                               for d in found["duplicates"]]
        found["splits"] = [{**s, "groups": [[str(f) for f in group] for group in s["groups"]]}
                           for s in found["splits"]]
        return found

    def lines(self) -> list[str]:
        out = [f"gallery: {self.identities} identities, {self.faces} faces"]
        out += [f"  {n}" for n in self.notes]
        if self.identities < MIN_IDENTITIES:  # the note above says why; "0 pair(s)" would read as looked for
            out.append(f"one photo under two names: {len(self.duplicates)} pair(s)")
            out += [self._pair(s) for s in self.duplicates]
            out.append("one person under two names (other photos), photos unlike their identity: not looked for")
        else:
            out.append(f"one person under two names? {len(self.duplicates)} pair(s)")
            out += [self._pair(s) for s in self.duplicates]
            out.append(f"photos more like someone else than like the rest of their identity: {len(self.misfits)}")
            out += [f"  face {m.face_id}{_from(m.source)} of {shown(m.identity)}: {m.own_best:.3f} with its own, "
                    f"{m.other_best:.3f} with {shown(m.other)}" for m in self.misfits]
            out.append(f"photos that look like no one else of their identity: {len(self.strays)}")
            out += [f"  face {s.face_id}{_from(s.source)} of {shown(s.identity)}: {s.own_best:.3f} with its own "
                    f"({s.chance:.0%} of strangers' identities score as high with it)" for s in self.strays]
            out.append(f"names whose photos look like two people or more: {len(self.splits)}")
            for split in self.splits:
                out.append(f"  {shown(split.identity)}: {len(split.groups)} groups, best score between them "
                           f"{split.cross_best:.3f} ({split.chance:.0%} of strangers' identities score as high)")
                for number, group in enumerate(split.groups):
                    sources = split.sources[number] if split.sources else ()
                    faces = ", ".join(f"{face}{_from(source)}" for face, source in
                                      zip(group, sources or [""] * len(group), strict=True))
                    out.append(f"    group {number + 1}: {faces}")
                out.append(f"    to give a group a name of its own: `arcmatch gallery move FACE --from "
                           f"{shown(split.identity)} --to NAME --new` for each of its faces")
        out.append(f"identities with no face that passed the quality gate: {len(self.below_gate)}")
        out += [f"  {shown(name)}" for name in self.below_gate]
        return out


def check(face_ids: np.ndarray, vectors: np.ndarray, labels: np.ndarray, passed: np.ndarray | None = None,
          distinct: Pairs = frozenset(), strict_alpha: float = STRICT_ALPHA,
          confirmed: np.ndarray | None = None) -> Health:
    """The findings for faces (ids, unit vectors, identities, and whether each passed the quality gate when it
    was enrolled: None where nothing was judged, as for box-crop models). `distinct`: pairs of identity names a
    person has confirmed are different people; they are not listed again (nor their photos as misfits), and
    their scores stay in the evidence of what strangers score. `strict_alpha`: the level for a pair no photo
    backs (REVIEW_ALPHA lists every pair at the review level). `confirmed`: per face, whether a person said it
    shows its identity (a hard photo of the right person): never listed as a misfit or a stray again."""
    labels = np.asarray(labels).astype(str)
    names = np.unique(labels)
    health = Health(len(names), len(face_ids))
    if not len(face_ids):
        return health
    scores, names, own = identity_scores(vectors, labels)  # once: the duplicates and the misfits both read them
    # each photo's best score with the other photos of its identity (NaN where it has none to compare with) and
    # the identity it scores best against otherwise
    own_best = np.full(len(face_ids), np.nan)
    several = np.zeros(len(face_ids), bool)  # two or more other photos: they, not this one, say who it is
    for name in range(len(names)):
        members = np.flatnonzero(own == name)
        if len(members) >= 2:
            within = vectors[members] @ vectors[members].T
            np.fill_diagonal(within, -np.inf)
            own_best[members] = within.max(axis=1)
            several[members] = len(members) >= 3
    best_other = np.nanargmax(np.nan_to_num(scores, nan=-np.inf), axis=1)
    other_best = scores[np.arange(len(scores)), best_other]
    astray = other_best > own_best  # False where NaN: a photo alone in its identity backs nothing
    kept = np.zeros(len(face_ids), bool) if confirmed is None else np.asarray(confirmed, bool)
    backing = {frozenset((int(own[f]), int(best_other[f]))) for f in np.flatnonzero(astray)}
    model = None
    if len(names) >= MIN_IDENTITIES:  # looser than calibration's: a person looks, nothing is decided
        model = fit_scores(scores, names, own, distinct=distinct)[0]
        index = {str(n): i for i, n in enumerate(names)}
        health.duplicates = [d for d in suspected_duplicates(scores, names, own, model, REVIEW_ALPHA, distinct)
                             if d.expected_among_strangers < strict_alpha
                             or frozenset((index[d.first], index[d.second])) in backing]
    else:
        health.notes.append(f"duplicates, and photos unlike their identity, are looked for from {MIN_IDENTITIES} "
                            "identities on (one photo under two names at any size)")
    listed = {frozenset((d.first, d.second)) for d in health.duplicates}
    health.duplicates = [replace(d, same_photo=d.score >= SAME_PHOTO) for d in health.duplicates]
    health.duplicates += [d for d in _same_photos(scores, names, own, distinct)
                          if frozenset((d.first, d.second)) not in listed]
    # a photo is a misfit when it is nearer another identity than its own, and that nearness is beyond what
    # strangers give (the pair is listed): a hard photo of its own person is not
    alike = {frozenset((d.first, d.second)) for d in health.duplicates}
    for face in np.flatnonzero(astray & ~kept):
        name, other = str(names[own[face]]), str(names[best_other[face]])
        if frozenset((name, other)) in alike:
            health.misfits.append(Misfit(int(face_ids[face]), name, float(own_best[face]), other,
                                         float(other_best[face])))
    if model is not None and health.misfits:
        _one_photo_pairs(health, vectors, own, names, face_ids, model, own_best, strict_alpha)
    if model is not None:
        listed = {m.face_id for m in health.misfits}  # said already, with whom it looks like
        chance = model.survival((np.nan_to_num(own_best, nan=np.inf) - model.location) / model.spread)
        for face in np.flatnonzero(several & (chance >= STRAY_CHANCE) & ~kept):
            if int(face_ids[face]) not in listed:
                health.strays.append(Stray(int(face_ids[face]), str(names[own[face]]), float(own_best[face]),
                                           float(chance[face])))
        health.strays.sort(key=lambda s: -s.chance)
        health.splits = _splits(vectors, own, names, face_ids, model, kept)
    if passed is not None:
        judged = np.asarray(passed, dtype=object)
        health.below_gate = [str(n) for n in names if all(judged[labels == n] == False)]  # noqa: E712
    health.misfits.sort(key=lambda m: m.own_best - m.other_best)
    return health


def _same_photos(scores: np.ndarray, names: np.ndarray, own: np.ndarray, distinct: Pairs) -> list[Suspect]:
    """The pairs of names that share a photo (SAME_PHOTO), each with its best cross score, unless a person said
    the two are different people."""
    found: dict[frozenset[str], float] = {}
    for face, other in np.argwhere(np.nan_to_num(scores, nan=-1.0) >= SAME_PHOTO):
        pair = frozenset((str(names[own[face]]), str(names[other])))
        found[pair] = max(found.get(pair, -1.0), float(scores[face, other]))
    return [Suspect(*sorted(pair), score, 0.0, same_photo=True) for pair, score in sorted(
        found.items(), key=lambda item: -item[1]) if pair not in distinct]


def _one_photo_pairs(health: Health, vectors: np.ndarray, own: np.ndarray, names: np.ndarray, face_ids: np.ndarray,
                     model, own_best: np.ndarray, strict_alpha: float) -> None:
    """A pair one misfiled photo makes is no person under two names: a photo of A filed under B scores with A's
    photos as one person's photos do, so the pair (A, B) is listed, and A's own photos, nearer that photo than each
    other, look astray too (a QA pass: Jennifer Aniston's photo under Joe Lieberman made the two "one person", and a
    correct photo of hers a misfit; merging would have made two people one). For each listed pair, its most astray
    misfit is taken out: where what is left of the pair would not be listed at the strict level, the pair is
    marked `misfiled` with that photo (move it, do not merge), and the partner's photos astray only because of it
    are no longer misfits."""
    index = {str(n): i for i, n in enumerate(names)}
    position = {int(f): i for i, f in enumerate(face_ids)}
    pairs = len(names) * (len(names) - 1) / 2
    moved: dict[frozenset[str], int] = {}  # pair -> the misfiled photo's position
    for m in sorted(health.misfits, key=lambda m: m.own_best - m.other_best):  # the most astray first
        key = frozenset((m.identity, m.other))
        if key in moved:
            continue
        photo, home, partner = position[m.face_id], index[m.identity], index[m.other]
        rest = np.flatnonzero((own == home) & (np.arange(len(own)) != photo))
        theirs = np.flatnonzero(own == partner)
        if not len(rest):  # the photo is all its identity holds: a second name for the partner, not a misfile
            continue
        cross = vectors[theirs] @ vectors[rest].T
        rows = np.concatenate([theirs, rest])
        best = np.concatenate([cross.max(axis=1), cross.max(axis=0)])
        if pairs * float(np.min(model.survival((best - model.location[rows]) / model.spread[rows]))) >= strict_alpha:
            moved[key] = photo
    if not moved:
        return
    health.duplicates = [replace(d, misfiled=int(face_ids[moved[frozenset((d.first, d.second))]]))
                         if frozenset((d.first, d.second)) in moved else d for d in health.duplicates]
    kept = []
    for m in health.misfits:
        photo = moved.get(frozenset((m.identity, m.other)))
        here = position[m.face_id]
        if photo is not None and here != photo:
            others = np.flatnonzero((own == index[m.other]) & (np.arange(len(own)) != photo))
            if not len(others) or float(np.max(vectors[others] @ vectors[here])) <= own_best[here]:
                continue  # astray only because of the misfiled photo
        kept.append(m)
    health.misfits = kept


def _splits(vectors: np.ndarray, own: np.ndarray, names: np.ndarray, face_ids: np.ndarray, model,
            kept: np.ndarray) -> list[Split]:
    """The identities of four photos or more that are two people (Split): within each, its photos are linked where
    a pair scores beyond what SPLIT_LINK of strangers' identities would (by either photo's own standardisation),
    and the linked groups of two photos or more are its people. A photo linked to none is a stray's business, and
    an identity none of whose smaller groups holds a photo a person has not confirmed is not listed."""
    found = []
    for name in range(len(names)):
        members = np.flatnonzero(own == name)
        if len(members) < 4:
            continue
        within = vectors[members] @ vectors[members].T
        chance = model.survival((within - model.location[members, None]) / model.spread[members, None])
        chance = np.minimum(chance, chance.T)
        linked = chance < SPLIT_LINK
        np.fill_diagonal(linked, False)
        groups = sorted((g for g in _linked_groups(linked) if len(g) >= 2), key=lambda g: (-len(g), g[0]))
        if len(groups) < 2 or all(kept[members[g]].all() for g in groups[1:]):
            continue
        group_of = np.full(len(members), -1)
        for number, group in enumerate(groups):
            group_of[group] = number
        apart = (group_of[:, None] != group_of[None, :]) & (group_of[:, None] >= 0) & (group_of[None, :] >= 0)
        best = np.unravel_index(np.argmax(np.where(apart, within, -np.inf)), within.shape)
        found.append(Split(str(names[name]), tuple(tuple(int(face_ids[members[i]]) for i in g) for g in groups),
                           float(within[best]), float(chance[best])))
    return sorted(found, key=lambda split: split.cross_best)


def _linked_groups(linked: np.ndarray) -> list[list[int]]:
    """The connected groups of a symmetric link matrix, each a sorted list of row numbers."""
    unseen, groups = set(range(len(linked))), []
    while unseen:
        frontier = [min(unseen)]
        unseen.discard(frontier[0])
        group = []
        while frontier:
            row = frontier.pop()
            group.append(row)
            for other in np.flatnonzero(linked[row]):
                if int(other) in unseen:
                    unseen.discard(int(other))
                    frontier.append(int(other))
        groups.append(sorted(group))
    return groups


def check_index(index) -> Health:
    """`check` over every labelled face a FaceIndex holds: their vectors, and the quality verdict their metadata
    recorded at enrollment (five-point models record one), with the pairs a person confirmed are different people
    (indexer/distinct.py) and the faces a person confirmed show their identity (CONFIRMED_IN) never listed."""
    from indexer.calibration import labelled_faces
    from indexer.distinct import pairs

    ids, names = labelled_faces(index)
    rows = index.rows([int(i) for i in ids])  # vector, metadata and source in one read
    keep = np.asarray([int(i) in rows for i in ids], bool)  # deleted since the scan
    ids, names = ids[keep], names[keep]
    found = [rows[int(i)] for i in ids]
    passed = [row.metadata.get("face", {}).get("quality", {}).get("passed") for row in found]
    confirmed = [row.metadata.get(CONFIRMED_IN) == str(n) for row, n in zip(found, names, strict=True)]
    matrix = np.stack([row.vector for row in found]) if found else np.zeros((0, index.info().dim), np.float32)
    health = check(ids, matrix, names, passed, distinct=pairs(index), confirmed=np.asarray(confirmed, bool))
    # a face id says nothing to the person who must find the photo: each listed face names its file
    health.misfits = [replace(m, source=rows[m.face_id].source) for m in health.misfits]
    health.strays = [replace(s, source=rows[s.face_id].source) for s in health.strays]
    health.splits = [replace(s, sources=tuple(tuple(rows[f].source for f in group) for group in s.groups))
                     for s in health.splits]
    return health


def _from(source: str) -> str:
    return f" ({source})" if source else ""


def _expected(count: float) -> str:
    """How many pairs strangers would give, as said: a fitted tail with an end gives exactly 0 beyond it, which is
    the model's word, not a count of nothing."""
    return f"{count:.2g}" if count >= 1e-3 else "fewer than 0.001"
