"""`arcmatch archive restore`: a gallery made again in a store from its face archive.

The archive (indexer/archive.py) keeps every face that entered a gallery, enrolled through the API or ingested,
with its identity, source and metadata, and a tombstone for every face deleted since. So it is the gallery's
backup: a Milvus volume lost, or a gallery moved from the Milvus Lite file it was built in to a production server,
is the archive's live faces embedded again into the store. A QA pass moving a Lite gallery to a server found no
way but ingesting the folders again and digging the API's faces out of the archive's Parquet by hand.

What it does: every live archived face the gallery's collection in this store lacks is embedded by the model (Ray
Data, as a re-embed's copy) and written under its own face id, identity and metadata; then the alias is made, so
no search answers from a half-filled gallery. It never removes or replaces a face, so it can be run again after a
kill (the faces written are skipped) or over a gallery whose store lost only some of its faces. A gallery this
store serves by another model is refused (that is `arcmatch reembed`'s work).

What it cannot bring back lives in the store, not the archive: the gallery's calibration and the pairs people
confirmed as different. The summary says so; `arcmatch calibrate` and `arcmatch gallery distinct` redo them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import Conflict, NotFound
from embedder.faces import FacePolicy
from indexer.archive import FaceArchive
from indexer.galleries import Galleries, collection_name
from indexer.store import CollectionInfo, FaceIndex, connect, is_lite_uri
from jobs.pipelines.reading import Reader, Skipped, plan, unreadable, why
from jobs.pipelines.reembed import copy_archived
from jobs.progress import Console, silent


@dataclass
class RestoreSummary:
    gallery: str
    collection: str = ""
    model: str = ""
    threshold: float | None = None
    archived_live: int = 0
    already_there: int = 0  # in the collection already (an earlier, killed run; faces the store kept)
    kinds: dict[str, int] = field(default_factory=dict)
    refused_kinds: dict[str, str] = field(default_factory=dict)
    embedded: int = 0  # the dry run: faces it would embed
    skipped: list[Skipped] = field(default_factory=list)
    in_store: int = 0
    archive_to: str | None = None  # the store's own archive, where another was read from
    archived: int = 0  # faces copied into it (the dry run: to copy)
    made_alias: bool = False
    seconds: float = 0.0
    dry_run: bool = False

    def lines(self) -> list[str]:
        head = "would restore" if self.dry_run else "restored"
        out = [f"{head} gallery {self.gallery!r} into {self.collection} ({self.model}), threshold {self.threshold}",
               f"archived faces {self.archived_live}, in the store already {self.already_there}, to embed "
               f"{self.archived_live - self.already_there}"
               + (" (archived " + ", ".join(f"{kind} {n}" for kind, n in self.kinds.items()) + ")"
                  if self.kinds else "")]
        out += [f"archived {kind}: this model reads none of them: {reason}"
                for kind, reason in self.refused_kinds.items()]
        if self.archive_to is not None:
            out.append(f"{'would copy' if self.dry_run else 'copied'} {self.archived} archived faces to this "
                       f"store's archive, {self.archive_to}, where its writers keep theirs")
        verb = "would embed" if self.dry_run else "embedded"
        out.append(f"{verb} {self.embedded}, cannot embed {len(self.skipped)}"
                   + (f" ({why(self.skipped)})" if self.skipped else ""))
        if not self.dry_run:
            rate = self.embedded / self.seconds if self.seconds else 0.0
            out.append(f"{self.in_store} faces in {self.collection}, {rate:.1f} faces/s over {self.seconds:.1f} s"
                       + (f"; alias {self.gallery!r} -> {self.collection}" if self.made_alias else ""))
            out.append("not in the archive, so not restored: the gallery's calibration (`arcmatch calibrate`) and "
                       "the pairs confirmed as different people (`arcmatch gallery distinct`)")
        return out


def restore(
    model: str,
    *,
    milvus: str,
    token: str | None = None,
    gallery: str = "faces",
    archive: str,
    archive_to: str | None = None,
    threshold: float | None = None,
    policy: FacePolicy | None = None,
    dry_run: bool = False,
    batch_size: int = 64,
    embed_concurrency: int = 1,
    index_type: str = "HNSW",
    console: Console | None = None,
) -> RestoreSummary:
    """Embed gallery `gallery`'s live archived faces with `model` into this store's collection of that model,
    then make the gallery's alias if there was none. `archive_to`: the archive this store's writers keep (the
    service's, `reembed`'s next read), where it is not `archive`: the faces read are copied there first, with the
    tombstones of those deleted, so the gallery's next writes and its next model find every face in one place.
    `policy` finds the faces of photos archived for a box-crop model when `model` wants aligned faces (as a
    re-embed's)."""
    from embedder.embed import open_embedder

    started, console = time.perf_counter(), console or silent()
    embedder = open_embedder(model)
    spec, calibration = embedder.spec, embedder.calibration
    # a gallery is made again as it was: with the model's threshold, or none where the model has none (ingest made
    # it so), not with one made up to satisfy the command
    threshold = threshold if threshold is not None else (calibration.threshold if calibration else None)
    kept = FaceArchive(archive, gallery)
    live = kept.live_versions()
    if not live:
        raise NotFound(_nothing_in(archive, gallery))
    # a dry run into a Lite file not made yet looks at an empty store, and makes no file
    client = None if dry_run and is_lite_uri(milvus) and not Path(milvus).exists() else connect(milvus, token)
    galleries = Galleries(client, gallery) if client is not None else None
    summary = RestoreSummary(gallery, model=spec.version, threshold=threshold, dry_run=dry_run,
                             archived_live=len(live))
    try:
        serving, existing = _in_store(client, galleries, gallery, spec.version, summary)
    except Conflict:
        client.close()
        raise
    pending = {face: ns for face, ns in live.items() if face not in existing}
    summary.already_there = len(live) - len(pending)
    # the box of the model that archived the photos: for a model of its own kind, its own (a restore is
    # mostly with the model the gallery was made with)
    reader = Reader(spec, policy, tuple(spec.crop_box) if spec.crop_box else None)
    planned = plan(kept, pending, reader)
    summary.kinds, summary.refused_kinds, summary.skipped = planned.kinds, planned.refused_kinds, planned.skipped
    readable = planned.readable
    elsewhere = FaceArchive(archive_to, gallery) if archive_to not in (None, archive) else None
    missing = set(live) - set(elsewhere.live_versions()) if elsewhere is not None else set()
    if elsewhere is not None:
        summary.archive_to, summary.archived = archive_to, len(missing)
    if dry_run:
        with console.stage("read", total=len(readable), unit="face") as bar:
            summary.skipped += unreadable(kept, readable, reader, batch_size, bar)
        summary.embedded = len(pending) - len(summary.skipped)
        summary.seconds = time.perf_counter() - started
        if client is not None:
            client.close()
        return summary
    if elsewhere is not None:  # archive before vector, as every writer
        with console.stage("archive", total=len(missing), unit="face") as bar:
            _copy_entries(kept, elsewhere, missing, bar)
            elsewhere.remember_deleted(kept.deleted_ids())
    if serving is not None:
        target = FaceIndex(client, serving)
    else:
        info = CollectionInfo.of_model(spec, threshold, calibration.tail_reference if calibration else None)
        target = galleries.prepare(info, index_type=index_type)
    with console.stage("restore", total=len(readable), unit="face") as bar:
        summary.embedded, failed = copy_archived(kept, readable, model, reader, target, milvus, token, batch_size,
                                                 embed_concurrency, bar)
        summary.skipped += failed
    target.flush()
    if serving is None:
        galleries.switch(target.collection, lose=None)  # no alias before: nothing served to lose
        summary.made_alias = True
    summary.in_store = target.count()
    client.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _in_store(client, galleries: Galleries | None, gallery: str, version: str,
              summary: RestoreSummary) -> tuple[str | None, set[int]]:
    """(the collection the gallery serves, or None; the face ids this model's collection holds already), with
    summary.collection set; Conflict where the store serves the gallery by another model, or holds collections of
    other models and none in service. No client: an empty store."""
    summary.collection = collection_name(gallery, version)
    if galleries is None:
        return None, set()
    serving = galleries.serving()
    if serving is not None:
        summary.collection = serving
        there = FaceIndex(client, serving).info().model_version
        if there != version:
            raise Conflict(f"gallery {gallery!r} is served by model {there} in this store: restore with that "
                           f"model (--model), or move the gallery to this one with `arcmatch reembed`")
        return serving, set(FaceIndex(client, serving).iter_ids())
    galleries.refuse_case_twin()
    names = [c.name for c in galleries.collections()]
    others = [name for name in names if name != summary.collection]
    if others:
        raise Conflict(f"gallery {gallery!r} has collections of other models in this store ({', '.join(others)}) "
                       "and none in service: `arcmatch collections list` says what they hold")
    return None, set(FaceIndex(client, summary.collection).iter_ids()) if names else set()


def _nothing_in(archive: str, gallery: str) -> str:
    """Why an archive gives nothing to restore, said for what the path is: nothing there, one gallery's own
    folder of an archive (its parent is the archive), an archive of other galleries."""
    if "://" in archive:
        return f"the archive at {archive} holds no faces of gallery {gallery!r}: nothing to restore"
    root = Path(archive)
    if not root.exists():
        return f"no archive at {archive}: nothing to restore (--from-archive names the folder of the archive)"
    if (root / "faces").is_dir() and any((root / "faces").glob("part-*.parquet")):
        return (f"{archive} is the folder of one gallery, {root.name!r}, inside an archive: give the archive, "
                f"{root.parent}, with --gallery {root.name}")
    held = sorted(child.name for child in root.iterdir() if (child / "faces").is_dir()) if root.is_dir() else []
    if held:
        return (f"the archive at {archive} holds no faces of gallery {gallery!r}; it holds "
                f"{', '.join(repr(name) for name in held)} (--gallery)")
    return f"{archive} is no face archive (no gallery's faces in it): nothing to restore"


def _copy_entries(kept: FaceArchive, into: FaceArchive, faces: set[int], bar, batch: int = 256) -> None:
    """The archived faces `faces` of `kept` written into another archive, a part per `batch` faces."""
    chunk = []
    for entry in kept.entries(faces):
        chunk.append(entry)
        if len(chunk) >= batch:
            into.write(chunk)
            bar.update(len(chunk))
            chunk = []
    into.write(chunk)
    bar.update(len(chunk))
