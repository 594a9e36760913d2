"""Naming the faces nobody has named: clusters for a person to review, promoted to identities, split and merged,
and faces taken out of an identity ("not this person").

What is recorded where, and why:
- A cluster's faces are those of the last `arcmatch cluster` run (indexer/cluster_store.py). Promoting, splitting and
  merging write a new run with the change, so every reader (other replicas, the page) sees it. The next clustering
  run starts again from the faces (the data, the method, its settings), and takes from the last run only the ids
  of the clusters it finds again: a split or a merge holds until then, and a name is what lasts.
- A cluster id names whatever the last run put under it, so a promote may say which faces it saw (`members`, a
  fingerprint of them all), and is refused when the cluster holds others by then.
- A name given changes the faces' identity in the store and in the archive, with the same vectors and images: a
  promoted face is an enrolled face, and it survives the next model's re-embed like any other.
- "Not this person" is kept with the face itself (its metadata's `rejected_from`, in the store and the archive),
  so it travels through re-embeds: the face becomes unlabelled again, and neither a promotion nor an enrollment of
  the same photo puts it back under that name unless told to proceed; an ingestion of the same named tree skips
  it and reports why (jobs/pipelines/sink.py: keep_rejections).
- Before a name is given, the faces are searched among the named ones: a face that matches someone else above
  the threshold is a 409 naming that identity, unless the request says to proceed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from common.errors import BadInput, Conflict, NotFound
from indexer.cluster_store import ClusterInfo, ClusterStore, Run
from indexer.errors import InvalidValue
from indexer.ids import (
    CONFIRMED_IN,
    MERGED_FROM,
    REJECTED_FROM,
    STRANGER,
    UNLABELLED,
    validate_face_id,
    validate_identity,
)
from indexer.store import FaceRow
from indexer.writer import merged_from, rejected_from

SAMPLE = 8  # face ids shown per cluster in a listing


@dataclass(frozen=True)
class ClusterView:
    cluster: int
    size: int
    cohesion: float
    representative: int
    face_ids: list[int]  # a listing: the representative and a few others; one cluster: all
    members: str = ""  # members_key of all its faces: what a promote may send back (Curator.promote's `seen`)


def members_key(face_ids) -> str:
    """A short fingerprint of a cluster's faces (all of them, in any order): a cluster id names whatever the last
    run put under it, and a run between a look and a promote (a QA pass: a connected-components run at a low
    threshold kept id 0 for ten people's 41 faces) would otherwise name faces nobody saw."""
    digest = hashlib.blake2b(digest_size=8)
    for face in sorted(int(f) for f in face_ids):
        digest.update(face.to_bytes(8, "big"))
    return digest.hexdigest()


@dataclass(frozen=True)
class Named:
    identity: str
    face_ids: list[int]
    skipped: list[dict] = field(default_factory=list)  # {"face_id", "reason"}: faces left as they were


class Curator:
    """Clusters and names over one service's collection (IdentityService) and its cluster store."""

    def __init__(self, service, store: ClusterStore | None) -> None:
        self.service, self.store = service, store

    # reading
    def _run(self) -> Run:
        run = self.store.latest() if self.store is not None else None
        if run is None:
            raise NotFound("no clusters yet: run `arcmatch cluster` on the gallery's unlabelled faces")
        return run

    @staticmethod
    def _view(run: Run, info: ClusterInfo, limit: int | None) -> ClusterView:
        members = run.members(info.cluster)
        rest = [int(f) for f in members if int(f) != info.representative]
        ids = [info.representative, *rest]
        return ClusterView(info.cluster, info.size, info.cohesion, info.representative,
                           ids if limit is None else ids[:limit], members_key(members))

    def clusters(self, offset: int = 0, limit: int = 50, min_size: int = 2) -> tuple[list[ClusterView], int, str]:
        """A page of clusters, largest first: (views, how many there are of min_size or more, the run's name)."""
        run = self._run()
        chosen = [c for c in run.clusters if c.size >= min_size]
        return [self._view(run, c, SAMPLE) for c in chosen[offset : offset + limit]], len(chosen), run.name

    def cluster(self, cluster: int) -> ClusterView:
        run = self._run()
        return self._view(run, self._info(run, cluster), None)

    @staticmethod
    def _info(run: Run, cluster: int) -> ClusterInfo:
        info = next((c for c in run.clusters if c.cluster == cluster), None)
        if info is None:
            raise NotFound(f"no cluster {cluster}")
        return info

    # changing clusters
    def _rewrite(self, run: Run, cluster_of: np.ndarray, keep: np.ndarray | None = None) -> None:
        """A new run: `cluster_of` per face of `run` (faces where keep is False leave it); summaries redone for
        the clusters that changed, kept for the others (their cohesion needs the graph, which is not stored)."""
        keep = np.ones(len(run.face_ids), bool) if keep is None else keep
        ids, cluster_of = run.face_ids[keep], cluster_of[keep]
        old = {c.cluster: c for c in run.clusters}
        sizes = dict(zip(*np.unique(cluster_of, return_counts=True), strict=True))
        infos = []
        for cluster, size in sizes.items():
            cluster, size = int(cluster), int(size)
            members = ids[cluster_of == cluster]
            before = old.get(cluster)
            representative = before.representative if before and before.representative in members else int(members[0])
            infos.append(ClusterInfo(cluster, size, before.cohesion if before else 1.0, representative))
        infos.sort(key=lambda c: (-c.size, c.cluster))
        self.store.write(ids, cluster_of, infos)

    def _members(self, run: Run, cluster: int, face_ids: list[int] | None) -> list[int]:
        members = [int(f) for f in run.members(self._info(run, cluster).cluster)]
        if face_ids is None:
            return members
        chosen = [validate_face_id(int(f)) for f in face_ids]
        strangers = sorted(set(chosen) - set(members))
        if strangers:
            raise BadInput(f"face(s) {', '.join(map(str, strangers[:5]))} are not in cluster {cluster}")
        if not chosen:
            raise BadInput("name at least one face")
        return list(dict.fromkeys(chosen))

    def split(self, cluster: int, face_ids: list[int]) -> ClusterView:
        """These faces of the cluster become a cluster of their own (a new id)."""
        run = self._run()
        chosen = set(self._members(run, cluster, face_ids))
        if len(chosen) == self._info(run, cluster).size:
            raise BadInput("a split leaves some faces behind: give fewer than all of them")
        new = 1 + max(c.cluster for c in run.clusters)
        moving = np.isin(run.face_ids, list(chosen))
        self._rewrite(run, np.where(moving, new, run.cluster_of))
        return self.cluster(new)

    def merge(self, clusters: list[int]) -> ClusterView:
        """These clusters become one, under the first one's id."""
        if len(set(clusters)) < 2:
            raise BadInput("a merge needs two clusters or more")
        run = self._run()
        for c in clusters:
            self._info(run, c)
        self._rewrite(run, np.where(np.isin(run.cluster_of, clusters), clusters[0], run.cluster_of))
        return self.cluster(clusters[0])

    # names
    def promote(self, cluster: int, identity: str, face_ids: list[int] | None = None, *,
                proceed: bool = False, seen: str | None = None) -> Named:
        """Name a cluster's faces (or some of them) `identity`, new or existing. Faces rejected from that identity
        and faces named since the clustering are left out (`skipped`, with the reason). `seen`: the cluster's
        `members` as the caller saw it; Conflict, nothing named, when its faces are other faces now."""
        identity = validate_identity(identity)
        run = self._run()
        if seen is not None and (now := members_key(run.members(self._info(run, cluster).cluster))) != seen:
            raise Conflict(f"cluster {cluster} holds other faces than when you looked ({seen} -> {now}: clustered "
                           "again, or changed by someone else since): look at it again before naming it")
        named = self.name_faces(self._members(run, cluster, face_ids), identity, proceed=proceed)
        left = ~np.isin(run.face_ids, named.face_ids)
        self._rewrite(run, run.cluster_of, keep=left)
        return named

    def name_faces(self, face_ids: list[int], identity: str, *, proceed: bool = False) -> Named:
        """Unlabelled faces become `identity`'s: archive first, then the store (as every enrollment). A face
        confirmed a stranger loses that mark: it was this person's photo after all."""
        identity, face_ids = validate_identity(identity), [validate_face_id(f) for f in face_ids]
        service = self.service
        service.writer.in_service()
        rows = service.index.rows(face_ids)
        chosen, skipped = [], []
        for face in face_ids:
            row = rows.get(face)
            if row is None:
                skipped.append({"face_id": face, "reason": "no longer in the gallery"})
            elif row.identity != UNLABELLED:
                skipped.append({"face_id": face, "reason": f"already named {row.identity!r}"})
            elif identity in rejected_from(row.metadata) and not proceed:
                skipped.append({"face_id": face, "reason": f"rejected from {identity!r} (not this person)"})
            else:
                chosen.append(row)
        if not chosen:
            # none of them in the gallery at all is a face not found, not a clash with what the gallery holds
            refusal = NotFound if all(face not in rows for face in face_ids) else Conflict
            raise refusal(f"none of these faces can be named {identity!r}: "
                          + "; ".join(f"{s['face_id']}: {s['reason']}" for s in skipped[:3]))
        if service.conflict_check and not proceed:
            service.lookup.check_faces(np.stack([r.vector for r in chosen]), [r.face_id for r in chosen], identity)
        renamed = [replace(r, identity=identity, metadata={k: v for k, v in (r.metadata or {}).items()
                                                           if k != STRANGER}) for r in chosen]
        service.writer.rename(renamed)
        return Named(identity, [r.face_id for r in renamed], skipped)

    def reject(self, identity: str, face: int) -> FaceRow:
        """"Not this person": the face leaves `identity` and becomes unlabelled, remembering whom it is not."""
        identity, face = validate_identity(identity), validate_face_id(face)
        row = self._face_of(identity, face)
        metadata = {**(row.metadata or {}), REJECTED_FROM: sorted({*rejected_from(row.metadata), identity})}
        freed = replace(row, identity=UNLABELLED, metadata=metadata)
        self.service.writer.rename([freed])
        return freed

    def confirm(self, identity: str, face: int) -> FaceRow:
        """"It is this person": a face the gallery check listed as unlike its identity (or nearer another) is kept
        where it is, and never listed again while it is there (metadata CONFIRMED_IN; a move elsewhere ends it)."""
        identity, face = validate_identity(identity), validate_face_id(face)
        row = self._face_of(identity, face)
        kept = replace(row, metadata={**(row.metadata or {}), CONFIRMED_IN: identity})
        self.service.writer.rename([kept])
        return kept

    def _face_of(self, identity: str, face: int) -> FaceRow:
        """The stored row of `identity`'s face `face`, once the writer is in service; NotFound where that identity
        has no such face. What a curation of one face (reject, confirm, move) starts from."""
        self.service.writer.in_service()
        row = self.service.index.rows([face]).get(face)
        if row is None or row.identity != identity:
            raise NotFound(f"identity {identity!r} has no face {face}")
        return row

    def merge_identities(self, identity: str, other: str, *, proceed: bool = False) -> Named:
        """Every face of `other` becomes `identity`'s (one person enrolled under two names): archive first, then
        the store. A face rejected from `identity` ("not this person") stays `other`'s, listed in `skipped`. Two
        names a person said are different people (`different_people`) are a Conflict unless `proceed`, which
        forgets that pair; so are two names none of whose faces match at the gallery's threshold (_alike)."""
        from indexer import distinct

        identity, other = validate_identity(identity), validate_identity(other)
        if identity == other:
            raise InvalidValue("merging an identity into itself changes nothing")
        self.service.writer.in_service()
        if frozenset((identity, other)) in distinct.pairs(self.service.index):
            if not proceed:
                raise Conflict(f"{identity!r} and {other!r} were said to be different people: say proceed "
                               "(`--proceed`, proceed=true) to merge them anyway")
            distinct.forget(self.service.index, identity, other)
        faces = [int(f["id"]) for f in self.service.index.faces_of(other, limit=16384)]
        if not faces:
            raise NotFound(f"no identity {other!r}")
        rows = self.service.index.rows(faces)
        if not proceed:
            self._alike(identity, other, list(rows.values()))
        moved, skipped = [], []
        for row in rows.values():
            if identity in rejected_from(row.metadata):
                skipped.append({"face_id": row.face_id, "reason": f"rejected from {identity!r} (not this person)"})
            else:  # remembering the name it leaves, so that ingesting that name's folder again does not split them
                was = sorted({*merged_from(row.metadata), other})
                moved.append(replace(row, identity=identity, metadata={**(row.metadata or {}), MERGED_FROM: was}))
        self.service.writer.rename(moved)
        return Named(identity, [r.face_id for r in moved], skipped)

    def _alike(self, identity: str, other: str, theirs: list[FaceRow]) -> None:
        """Conflict where no face of `other` matches `identity` at the gallery's threshold: a merge the gallery
        check did not suggest (a QA pass merged Tony Blair into Paul Martin without a word, and every search for
        Blair then answered Martin). Nothing to judge by where the gallery has no threshold yet."""
        lookup = self.service.lookup
        mine = [int(f["id"]) for f in self.service.index.faces_of(identity, limit=16384)]
        if not mine or not theirs or not lookup.has_threshold():
            return
        threshold = lookup.threshold_in_use()[0]
        ours = self.service.index.rows(mine)
        best = float(np.max(np.stack([r.vector for r in ours.values()]) @ np.stack([r.vector for r in theirs]).T))
        if best < threshold:
            raise Conflict(f"no face of {other!r} matches {identity!r} (best score {best:.3f}, threshold "
                           f"{threshold:.3f}): they look like two people; say proceed (`--proceed`, proceed=true) "
                           "to merge them anyway")

    def move_face(self, identity: str, face: int, to: str, *, new: bool = False) -> FaceRow:
        """A face filed under the wrong person goes to `to`, remembering it is not `identity` (as "not this
        person" does), so enrolling the same photo under `identity` again asks first. `to` must be someone the
        gallery holds unless `new`: a mistyped name ("Jenifer_Aniston") would file the face as a second identity
        of one person, which every search then answers by."""
        identity, to, face = validate_identity(identity), validate_identity(to), validate_face_id(face)
        if identity == to:
            raise InvalidValue(f"face {face} is already {identity!r}'s")
        row = self._face_of(identity, face)
        if not new and not self.service.index.faces_of(to, limit=1):
            raise NotFound(f"no identity {to!r} in the gallery: check the name, or say it is someone new (`--new`, "
                           "new=true) to file the face under a name of its own")
        metadata = {**(row.metadata or {}), REJECTED_FROM: sorted({*rejected_from(row.metadata), identity} - {to})}
        moved = replace(row, identity=to, metadata=metadata)
        self.service.writer.rename([moved])
        return moved

    def different_people(self, first: str, second: str):
        """A person looked: `first` and `second` are two people (indexer/distinct.py); returns every such pair."""
        from indexer import distinct

        self.service.writer.in_service()
        for name in (first, second):
            if not self.service.index.faces_of(name, limit=1):
                raise NotFound(f"no identity {name!r}")
        return distinct.add(self.service.index, first, second)
