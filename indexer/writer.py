"""The one writer of a gallery's faces: every enrollment, ingestion, curation action, delete and purge goes here.

Why one place: the rules that keep a gallery's data safe hold only if no writer forgets one of them.
- The fence: a process writes only to the collection in service, or to the one a re-embed is filling from it (a
  new model's replicas started before the switch); a process left behind by the switch takes no writes, since they
  would miss the collection in service.
- "Not this person": a face's id derives from its photo, so writing a photo again reaches the face stored for it;
  a person's rejections stay with the face, and a row that would put a face back into an identity it was rejected
  from is reported to the caller, who refuses it (enrollment) or skips it with the reason (ingestion).
- Archive before vector: a face the store holds can always be embedded again by the next model. Rows the store
  would refuse are found first, so nothing is archived that the store will not hold.
- Deletes leave a tombstone in the archive before the store forgets the face, so a re-embed never brings it back.

A re-embed fills a collection that is not in service yet and is the one writer exempt from the fence; it writes
through `upsert` without a fence (`GalleryWriter(index)`, no galleries).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

from indexer.archive import ArchivedFace, FaceArchive
from indexer.errors import GalleryMoved, InvalidValue
from indexer.galleries import Galleries
from indexer.ids import (
    MERGED_FROM,
    REJECTED_FROM,
    validate_face_id,
    validate_identity,
    validate_metadata,
    validate_stored_identity,
)
from indexer.store import FaceIndex, FaceRow

Stored = dict[int, tuple[str, dict]]  # face id -> (identity, metadata) as stored

FENCE_CACHE_S = 1.0  # how long the answer to "which collection is in service" stands before the alias is read


def rejected_from(metadata: dict | None) -> list[str]:
    """The identities a face was taken out of ("not this person"), from its metadata."""
    return list((metadata or {}).get(REJECTED_FROM) or [])


def merged_from(metadata: dict | None) -> list[str]:
    """The names a face was filed under before a person merged that name into another (the same person)."""
    return list((metadata or {}).get(MERGED_FROM) or [])


def carry_rejections(row: FaceRow, stored: dict | None, *, keep: bool = False) -> FaceRow:
    """The row about to overwrite a stored face, keeping the face's rejections (`stored` is its metadata) other
    than the row's own identity in its metadata, so the upsert does not erase a person's "not this person".
    `keep`: the stored face's other keys that the row does not set stay too (a photo enrolled again keeps what
    its first enrollment said of it, and a person's "It is NAME")."""
    others = [name for name in rejected_from(stored) if name != row.identity]
    kept = {k: v for k, v in (stored or {}).items() if k != REJECTED_FROM} if keep else {}
    merged = {MERGED_FROM: merged_from(stored)} if merged_from(stored) and row.identity not in merged_from(stored) \
        else {}
    metadata = {**kept, **row.metadata, **({REJECTED_FROM: others} if others else {}), **merged}
    return replace(row, metadata=metadata) if metadata != row.metadata else row


class FaceImage(NamedTuple):
    """The image a face's archive entry keeps: `kind` "aligned" or "photo" (indexer/archive.py, ArchivedFace)."""

    kind: str
    image: bytes


class GalleryWriter:
    """Writes one gallery's faces: `index` is this process's collection, `archive` the gallery's face archive (None:
    faces are not kept), `galleries` its alias (None: a bare collection, no fence)."""

    def __init__(self, index: FaceIndex, archive: FaceArchive | None = None, galleries: Galleries | None = None,
                 ) -> None:
        self.index, self.archive, self.galleries = index, archive, galleries
        self.serving = index.collection  # the collection the alias names, as last read
        self.writable = True
        self._fence_read = -FENCE_CACHE_S

    # the fence
    def refresh(self, max_age_s: float = FENCE_CACHE_S) -> None:
        """Read the alias again if the last reading is older than `max_age_s`; Unavailable when it cannot be."""
        now = time.monotonic()
        if self.galleries is None or now - self._fence_read < max_age_s:
            return
        self.serving = self.galleries.serving()
        self.writable = self.serving == self.index.collection or (
            self.galleries.migrating_from(self.index.collection) == self.serving)
        self._fence_read = now

    def in_service(self) -> None:
        """GalleryMoved when this process may not write (the fence above)."""
        if self.galleries is None:
            return
        self.refresh()
        if not self.writable:
            raise GalleryMoved(f"gallery {self.galleries.gallery!r} is now served by another model; this process "
                               f"takes no writes until it is replaced: retry shortly")

    # "not this person"
    def check_rejections(self, rows: list[FaceRow], *, strong: bool = True,
                         keep: bool = False) -> list[tuple[FaceRow, bool]]:
        """Each row as it may overwrite its stored face (carrying the face's other rejections; with `keep` its other
        metadata too), and whether a person took that face out of the row's own identity. One read of the rows'
        ids, without vectors (`strong`: one that sees every write acknowledged before it)."""
        return [(row, rejected) for row, rejected, _ in self.check_records(rows, strong=strong, keep=keep)]

    def check_records(self, rows: list[FaceRow], *, strong: bool = True, keep: bool = False,
                      stored: Stored | None = None) -> list[tuple[FaceRow, bool, str | None]]:
        """check_rejections, and for a face a person merged out of the row's identity since, the identity it was
        merged into (else None): a tree ingested again must not split what a person joined. `stored`: the rows'
        records already read (stored), so that one read serves this and archived_as."""
        stored = self.stored(rows, strong=strong) if stored is None else stored
        out = []
        for row in rows:
            identity, metadata = stored.get(row.face_id, (None, None))
            merged_into = identity if identity != row.identity and row.identity in merged_from(metadata) else None
            out.append((carry_rejections(row, metadata, keep=keep), row.identity in rejected_from(metadata),
                        merged_into))
        return out

    def stored(self, rows: list[FaceRow], *, strong: bool = True) -> Stored:
        """(identity, metadata) of the rows' faces as the store holds them: one read, without vectors."""
        return self.index.stored_records([r.face_id for r in rows], strong=strong) if rows else {}

    def archived_as(self, rows: list[FaceRow], images: Mapping[int, FaceImage], stored: Stored | None = None
                    ) -> set[int]:
        """The faces among `rows` whose archive entry already holds exactly this row and image (a tree ingested
        again): written again, each would add its image to the archive once more. Only faces the store already
        holds with the same metadata are looked up, so a first ingestion reads nothing from the archive.
        `stored`: the rows' records already read (stored)."""
        if self.archive is None or not images:
            return set()
        held = self.stored([r for r in rows if r.face_id in images], strong=False) if stored is None else stored
        rows_by_id = {r.face_id: r for r in rows if r.face_id in images and r.face_id in held
                      and held[r.face_id][1] == r.metadata}
        if not rows_by_id:
            return set()
        same = set()
        for entry in self.archive.entries(set(rows_by_id)):
            row, image = rows_by_id[entry.face_id], images[entry.face_id]
            if (entry.identity, entry.source, entry.kind, entry.image) == (row.identity, row.source, image.kind,
                                                                          image.image) \
                    and json.loads(entry.metadata) == row.metadata:
                same.add(entry.face_id)
        return same

    # writing
    def write(self, rows: list[FaceRow], images: Mapping[int, FaceImage] | None = None, *,
              skipped: list[tuple[str, str]] | None = None) -> int:
        """Archive the rows' faces (`images`: what to keep of each, by face id; a row without one is not archived),
        then upsert the rows. The archive entry is the row's own identity, source and metadata, so the two never
        disagree. A row the store would refuse raises InvalidValue, or with `skipped` is left out with its reason
        (an ingestion goes on)."""
        self.in_service()
        rows = self._valid(rows, skipped)
        if self.archive is not None and images:
            self.archive.write([ArchivedFace(r.face_id, r.identity, r.source,
                                             json.dumps(r.metadata, ensure_ascii=False), *images[r.face_id])
                                for r in rows if r.face_id in images])
        return self.upsert(rows, skipped=skipped)

    def rename(self, rows: list[FaceRow]) -> int:
        """Stored faces under a new identity or metadata (curation): their archive entries again, same image,
        then the store."""
        kept = self.archive.entries({r.face_id for r in rows}) if self.archive is not None and rows else ()
        return self.write(rows, {e.face_id: FaceImage(e.kind, e.image) for e in kept})

    def upsert(self, rows: list[FaceRow], *, skipped: list[tuple[str, str]] | None = None) -> int:
        """The store's upsert alone (a re-embed's target, whose archive is already written). With `skipped`, a batch
        the store refuses is written row by row and each refused row is skipped with its reason."""
        if skipped is None:
            return self.index.upsert(rows)
        try:
            return self.index.upsert(rows)
        except InvalidValue:
            pass
        written = 0
        for row in rows:
            try:
                written += self.index.upsert([row])
            except InvalidValue as exc:
                skipped.append((row.source, f"invalid row: {exc}"))
        return written

    @staticmethod
    def _valid(rows: list[FaceRow], skipped: list[tuple[str, str]] | None) -> list[FaceRow]:
        valid = []
        for row in rows:
            try:
                validate_stored_identity(row.identity)
                validate_metadata(row.metadata)
            except InvalidValue as exc:
                if skipped is None:
                    raise
                skipped.append((row.source, f"invalid row: {exc}"))
            else:
                valid.append(row)
        return valid

    # forgetting
    def delete_identity(self, identity: str) -> int:
        """Every face of the identity: tombstones in the archive first (of the identity, and of each of its faces
        the store holds, so that one face's photo enrolled again is known as deleted without reading every entry:
        FaceArchive.tombstoned), then the store."""
        identity = validate_identity(identity)
        self.in_service()
        if self.archive is not None:
            self.archive.forget(identity=identity)
            faces = [int(f["id"]) for f in self.index.faces_of(identity)]
            if faces:
                self.archive.forget(identity=identity, face_ids=faces)
        return self.index.delete_identity(identity)

    def delete_face(self, identity: str, face: int) -> bool:
        identity, face = validate_identity(identity), validate_face_id(face)
        self.in_service()
        if self.archive is not None:
            self.archive.forget(identity=identity, face_ids=[face])
        return self.index.delete_face(identity, face)

    def purge_expired(self, now: float | None = None) -> int:
        """Delete the unlabelled faces kept from searches whose retention has passed (their metadata's
        expires_at), tombstones first; returns how many."""
        self.in_service()
        expired = self.index.expired_unlabelled(int(now if now is not None else time.time()))
        if expired:
            if self.archive is not None:
                self.archive.forget(identity=None, face_ids=expired)
            self.index.delete_ids(expired)
        return len(expired)
