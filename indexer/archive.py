"""The face archive: what is needed to embed every face of a gallery again, kept beside Milvus, keyed by face id.

A vector is only good for the model that made it. To move a gallery to a better model every face must be embedded
again, and faces enrolled through the API exist nowhere else: their uploads are gone once answered. So every face
that enters a gallery also lands here, as the model-independent face image (embedder/archiving.py says which),
with its face id, identity, source and metadata. Re-embedding streams it back (Ray Data reads the Parquet parts).

Layout, on any filesystem pyarrow opens (a local directory by default, `s3://`, `gs://`, a shared volume):

    <root>/<gallery>/faces/part-<time>-<writer>-<n>.parquet     entries, one part per write call
    <root>/<gallery>/deleted/part-<time>-<writer>-<n>.parquet   tombstones of faces and of whole identities

Parts are written once and never changed, so any number of writers (API replicas, ingestion tasks) can add them
without coordination. An entry is live while no tombstone of its face or its identity is newer than it, and a face
written twice (a retried request, a re-run job) reads back once, as its latest entry: writes are idempotent like
the Milvus upserts. Deleting marks (a tombstone, written before the answer); `compact` rewrites the parts without
what is dead or superseded, so the bytes of a deleted person are gone from storage, not only hidden.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from indexer.errors import BackendUnavailable, InvalidValue

ROW_GROUP = 32  # entries per Parquet row group (~1 MB of aligned faces): what reading one face costs
LOCATIONS_TTL_S = 2.0  # how long image() trusts its index of where each face is before listing the parts again
FEW = 2000  # entries(face_ids) of at most this many faces reads only the parts (row groups) that hold them
ENTRY_COLUMNS = ("face_id", "identity", "source", "metadata", "kind", "image", "written_ns")
_counter = itertools.count()


@dataclass(frozen=True)
class ArchivedFace:
    """One face as archived. `kind` says what `image` (encoded bytes) holds: "aligned" (the face warped onto the
    archive's template, embedder/archiving.py) or "photo" (the decoded picture, for models that crop by a box)."""

    face_id: int
    identity: str
    source: str
    metadata: str  # JSON text, as stored with the vector
    kind: str
    image: bytes = field(repr=False)


@dataclass
class ArchiveStats:
    live: int = 0
    dead: int = 0  # entries a tombstone or a newer entry hides, until compaction removes them
    parts: int = 0
    tombstones: int = 0
    bytes: int = 0

    def lines(self) -> list[str]:
        per_face = self.bytes / self.live if self.live else 0
        return [f"faces {self.live} live, {self.dead} dead or superseded (compaction removes them)",
                f"{self.parts} parts, {self.tombstones} tombstones, {self.bytes / 1e6:.1f} MB "
                f"({per_face / 1024:.1f} KiB per live face)"]


def _schemas():
    import pyarrow as pa

    entries = pa.schema([("face_id", pa.int64()), ("identity", pa.string()), ("source", pa.string()),
                         ("metadata", pa.string()), ("kind", pa.string()), ("image", pa.binary()),
                         ("written_ns", pa.int64())])
    tombstones = pa.schema([("face_id", pa.int64()), ("identity", pa.string()), ("written_ns", pa.int64())])
    return entries, tombstones


def open_location(root: str, what: str):
    """(pyarrow filesystem, base path without a trailing slash) for a local path or a URI pyarrow opens."""
    from pyarrow import fs

    text = str(root)
    try:
        if "://" in text:
            filesystem, base = fs.FileSystem.from_uri(text)
        else:
            filesystem, base = fs.LocalFileSystem(), os.path.abspath(text)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InvalidValue(f"{what} {text!r} is not a location pyarrow can open: {exc}") from None
    return filesystem, base.rstrip("/")


class FaceArchive:
    """The archive of one gallery (the name users configure, e.g. `faces`) at `root` (a path or a URI)."""

    def __init__(self, root: str, gallery: str) -> None:
        self.fs, base = open_location(root, "the face archive")
        self.root = f"{base}/{gallery}"
        self.uri = str(root)
        self._writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._located: tuple[float, tuple, dict[int, tuple[str, int]]] | None = None
        self._tombs: tuple[tuple, dict[int, int]] | None = None  # tombstoned(): (the parts read, face -> time)
        self._latest_seen: tuple[set[str], dict] = (set(), {})  # _locations(): the parts read, each face's newest

    # writing
    def write(self, faces: list[ArchivedFace]) -> None:
        """Add entries as one new part (nothing is written for an empty list)."""
        if not faces:
            return
        import pyarrow as pa

        now = time.time_ns()
        schema = _schemas()[0]
        table = pa.table({"face_id": [f.face_id for f in faces], "identity": [f.identity for f in faces],
                          "source": [f.source for f in faces], "metadata": [f.metadata for f in faces],
                          "kind": [f.kind for f in faces], "image": [f.image for f in faces],
                          "written_ns": [now] * len(faces)}, schema=schema)
        self._put("faces", table, now)

    def forget(self, *, identity: str | None, face_ids: list[int] | None = None) -> None:
        """Tombstones, dead from this moment: every face of `identity` written until now, or with `face_ids` those
        faces only, and only where they belong to `identity` (a face id given with the wrong identity hides
        nothing, as the store's delete finds nothing); `identity=None` with face ids: whoever holds them."""
        import pyarrow as pa

        now = time.time_ns()
        ids = [int(f) for f in face_ids] if face_ids is not None else [None]
        if identity is None and face_ids is None:
            raise InvalidValue("forget needs an identity, face ids, or both")
        if ids:
            rows = {"face_id": ids, "identity": [identity] * len(ids), "written_ns": [now] * len(ids)}
            self._put("deleted", pa.table(rows, schema=_schemas()[1]), now)

    def remember_deleted(self, deleted: dict[int, int]) -> None:
        """Tombstones of face ids alone, each at the time its face was deleted (deleted_ids gives them): what a
        compaction keeps, and what a gallery restored into another archive takes along."""
        import pyarrow as pa

        if deleted:
            ids = sorted(deleted)
            self._put("deleted", pa.table({"face_id": ids, "identity": [None] * len(ids),
                                           "written_ns": [deleted[face] for face in ids]}, schema=_schemas()[1]),
                      time.time_ns())

    def _put(self, folder: str, table, now: int) -> None:
        import pyarrow.parquet as pq

        directory = f"{self.root}/{folder}"
        try:
            self.fs.create_dir(directory, recursive=True)
        except OSError as exc:
            raise BackendUnavailable(f"the face archive could not be written ({type(exc).__name__})") from exc
        name = f"part-{now:020d}-{self._writer}-{next(_counter)}.parquet"
        # written under a temporary name and moved: a reader never sees half a part (a rename is atomic locally
        # and on HDFS; an object store's PUT is all or nothing anyway)
        temporary = f"{directory}/.{name}.tmp"
        if folder == "faces":  # sorted in small row groups: one face's image (a thumbnail) reads one group
            table = table.sort_by("face_id")
        try:
            pq.write_table(table, temporary, filesystem=self.fs, row_group_size=ROW_GROUP)
            self.fs.move(temporary, f"{directory}/{name}")
            self._located = None  # this process reads its own writes at once (others' within LOCATIONS_TTL_S)
        except OSError as exc:  # a full disk, an unreachable bucket: nothing was acknowledged yet
            raise BackendUnavailable(f"the face archive could not be written ({type(exc).__name__})") from exc

    # reading
    def parts(self, folder: str = "faces") -> list[str]:
        from pyarrow import fs

        infos = self.fs.get_file_info(fs.FileSelector(f"{self.root}/{folder}", allow_not_found=True))
        return sorted(i.path for i in infos if i.type == fs.FileType.File and i.base_name.startswith("part-")
                      and i.base_name.endswith(".parquet"))

    def _read(self, paths: list[str], columns: list[str], schema):
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(p, columns=columns, filesystem=self.fs) for p in paths]
        return pa.concat_tables(tables) if tables else schema.empty_table().select(columns)

    def live_versions(self) -> dict[int, int]:
        """face id -> written_ns of its live entry; reads only three small columns of each part."""
        return {face: written for face, (written, _) in self._live(self.parts("faces")).items()}

    def _live(self, paths: list[str]) -> dict[int, tuple[int, str]]:
        """face id -> (written_ns, the part holding it) of each live entry among `paths`."""
        killed = self._killed()
        return {face: (written, path) for face, (written, identity, path) in self._latest(paths).items()
                if written > killed(face, identity)}

    def _latest(self, paths: list[str]) -> dict[int, tuple[int, str, str]]:
        """face id -> (written_ns, identity, part) of its newest entry among `paths`, live or not."""
        latest: dict[int, tuple[int, str, str]] = {}
        for path in paths:
            part = self._read([path], ["face_id", "identity", "written_ns"], _schemas()[0])
            for face, identity, written in zip(part["face_id"].to_pylist(), part["identity"].to_pylist(),
                                               part["written_ns"].to_pylist(), strict=True):
                if face not in latest or written >= latest[face][0]:
                    latest[face] = (written, identity, path)
        return latest

    def _killed(self):
        """(face id, identity) -> the newest tombstone that applies to that face filed under that identity."""
        dead_face, dead_identity = self._tombstones()
        return lambda face, identity: max(dead_face.get((face, None), -1), dead_face.get((face, identity), -1),
                                          dead_identity.get(identity, -1))

    def tombstoned(self, face_ids: list[int]) -> dict[int, int]:
        """face id -> its newest tombstone of its own (whoever held it), for those of `face_ids` that have one.
        Reads the tombstones only (a few small parts; every delete of a face or of an identity leaves one per face,
        indexer/writer.py), kept while their parts stay the same: an enrollment asks on every request."""
        key = tuple(self.parts("deleted"))
        if self._tombs is None or self._tombs[0] != key:
            by_face: dict[int, int] = {}
            for (face, _), written in self._tombstones()[0].items():
                by_face[face] = max(written, by_face.get(face, -1))
            self._tombs = (key, by_face)
        return {face: self._tombs[1][face] for face in face_ids if face in self._tombs[1]}

    def deleted_ids(self) -> dict[int, int]:
        """face id -> when it was deleted, for every face whose newest entry a tombstone (its own or its
        identity's) hides: what ingesting its photo again would bring back. A face deleted before a compaction is
        still known by its tombstone, which compaction keeps without the identity (compact)."""
        dead_face = self._tombstones()[0]
        killed, latest = self._killed(), self._latest(self.parts("faces"))
        out = {face: killed(face, identity) for face, (written, identity, _) in latest.items()
               if written <= killed(face, identity)}
        for (face, _), when in dead_face.items():
            if face not in latest:
                out[face] = max(when, out.get(face, -1))
        return out

    def _tombstones(self) -> tuple[dict[tuple[int, str | None], int], dict[str, int]]:
        """((face id, identity or None) -> newest tombstone, identity -> newest tombstone of all its faces)."""
        table = self._read(self.parts("deleted"), ["face_id", "identity", "written_ns"], _schemas()[1])
        by_face: dict[tuple[int, str | None], int] = {}
        by_identity: dict[str, int] = {}
        for face, identity, written in zip(table["face_id"].to_pylist(), table["identity"].to_pylist(),
                                           table["written_ns"].to_pylist(), strict=True):
            if face is not None:
                by_face[face, identity] = max(written, by_face.get((face, identity), -1))
            elif identity is not None:
                by_identity[identity] = max(written, by_identity.get(identity, -1))
        return by_face, by_identity

    def describe(self, versions: dict[int, int]) -> dict[int, tuple[str, str, str]]:
        """face id -> (kind, identity, source) of the entries `versions` names (face id -> written_ns, as
        `live_versions` gives): what a model upgrade will have to read, without reading an image."""
        out: dict[int, tuple[str, str, str]] = {}
        for path in self.parts("faces"):
            part = self._read([path], ["face_id", "written_ns", "kind", "identity", "source"], _schemas()[0])
            for face, written, kind, identity, source in zip(
                    *(part[c].to_pylist() for c in ("face_id", "written_ns", "kind", "identity", "source")),
                    strict=True):
                if versions.get(face) == written:
                    out[face] = (kind, identity, source)
        return out

    def archived_ids(self) -> set[int]:
        """Every face id that has an entry, live or dead."""
        return set(self._read(self.parts("faces"), ["face_id"], _schemas()[0])["face_id"].to_pylist())

    def tombstones_between(self, since_ns: int, until_ns: int) -> list[tuple[int | None, str | None]]:
        """(face id or None for a whole identity, identity) of the tombstones written in (since, until]."""
        table = self._read(self.parts("deleted"), ["face_id", "identity", "written_ns"], _schemas()[1])
        return [(face, identity) for face, identity, written in zip(
            table["face_id"].to_pylist(), table["identity"].to_pylist(), table["written_ns"].to_pylist(),
            strict=True) if since_ns < written <= until_ns]

    def entries(self, face_ids: set[int] | None = None, batch_rows: int = 256) -> Iterator[ArchivedFace]:
        """Every live entry (or those of `face_ids`), once each, part by part: memory stays one batch. A few faces
        (a cluster being named) are read from the parts that hold them only."""
        import pyarrow.parquet as pq

        if face_ids is not None and len(face_ids) <= FEW:
            yield from self._few(face_ids)
            return
        live = self.live_versions()
        for path in self.parts("faces"):
            with self.fs.open_input_file(path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows):
                    for row in batch.to_pylist():
                        face = row["face_id"]
                        if live.get(face) == row["written_ns"] and (face_ids is None or face in face_ids):
                            live.pop(face)  # the same version twice (a retried part): once
                            yield ArchivedFace(face, row["identity"], row["source"], row["metadata"], row["kind"],
                                               row["image"])

    def image(self, face_id: int) -> tuple[str, bytes] | None:
        """(kind, image) of a live face, or None: for showing faces (the review page's thumbnails). Where each
        face lives is indexed once and kept while the parts stay the same (re-checked every LOCATIONS_TTL_S)."""
        found = next(self._few({int(face_id)}), None)
        return (found.kind, found.image) if found is not None else None

    def _locations(self) -> dict[int, tuple[str, int]]:
        now = time.monotonic()
        if self._located is not None and now - self._located[0] < LOCATIONS_TTL_S:
            return self._located[2]
        key = (tuple(self.parts("faces")), tuple(self.parts("deleted")))
        if self._located is not None and self._located[1] == key:
            self._located = (now, key, self._located[2])
            return self._located[2]
        # parts are written once and never changed, so only the new ones are read (every enrollment adds one: read
        # whole, the index made each enrollment that looked at a face cost the archive's size); all again after a
        # compaction removed some
        read, latest = self._latest_seen
        if not read <= set(key[0]):
            read, latest = set(), {}
        for face, entry in self._latest([p for p in key[0] if p not in read]).items():
            if face not in latest or entry[0] >= latest[face][0]:
                latest[face] = entry
        self._latest_seen = (set(key[0]), latest)
        killed = self._killed()
        where = {face: (path, written) for face, (written, identity, path) in latest.items()
                 if written > killed(face, identity)}
        self._located = (now, key, where)
        return where

    def _few(self, face_ids: set[int]) -> Iterator[ArchivedFace]:
        import pyarrow.parquet as pq

        where = self._locations()
        by_part: dict[str, dict[int, int]] = {}
        for face in face_ids:
            if int(face) in where:
                path, written = where[int(face)]
                by_part.setdefault(path, {})[int(face)] = written
        for path, wanted in sorted(by_part.items()):
            table = pq.read_table(path, filesystem=self.fs, filters=[("face_id", "in", list(wanted))])
            for row in table.to_pylist():
                if wanted.pop(row["face_id"], None) == row["written_ns"]:
                    yield ArchivedFace(row["face_id"], row["identity"], row["source"], row["metadata"], row["kind"],
                                       row["image"])

    def stats(self) -> ArchiveStats:
        paths = self.parts("faces")
        live = self.live_versions()
        total = sum(self.fs.get_file_info(p).size for p in paths)
        rows = len(self._read(paths, ["face_id"], _schemas()[0]))
        return ArchiveStats(live=len(live), dead=rows - len(live), parts=len(paths),
                            tombstones=len(self.parts("deleted")), bytes=total)

    # compaction
    def compact(self, part_rows: int = 4096) -> ArchiveStats:
        """Rewrite the entries that are live into new parts and remove the old parts and the tombstones read:
        deleted faces' images leave storage. Safe beside writers: parts and tombstones that appear while it runs
        are not touched and keep their meaning (an entry written now is newer than every tombstone read).

        Each deleted face keeps a tombstone of its id alone, at the time it was deleted, with no name and no
        image: so an ingestion of its photo again still knows it was deleted (deleted_ids)."""
        import pyarrow as pa

        faces, tombstones = self.parts("faces"), self.parts("deleted")
        gone = self.deleted_ids()
        live = self.live_versions()
        keep: list[dict] = []
        schema = _schemas()[0]
        for path in faces:
            for row in self._read([path], list(ENTRY_COLUMNS), schema).to_pylist():
                if live.get(row["face_id"]) == row["written_ns"]:
                    live.pop(row["face_id"])
                    keep.append(row)
                if len(keep) >= part_rows:
                    self._put("faces", pa.Table.from_pylist(keep, schema=schema), time.time_ns())
                    keep = []
        if keep:
            self._put("faces", pa.Table.from_pylist(keep, schema=schema), time.time_ns())
        self.remember_deleted(gone)
        for path in faces + tombstones:
            self.fs.delete_file(path)
        return self.stats()

    def drop(self) -> None:
        """Remove the whole archive of this gallery."""
        from pyarrow import fs

        if self.fs.get_file_info(self.root).type != fs.FileType.NotFound:
            self.fs.delete_dir(self.root)
