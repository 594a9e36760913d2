"""`arcmatch reembed`: move a gallery to another model without losing a face, then switch its alias.

The face archive (indexer/archive.py) is the gallery's write log: every enrollment lands there before its vector,
and every delete leaves a tombstone there before the store forgets the face. So the job needs no hook into the
API while it runs:

1. plan: the collection in service (A), the archive's live faces at a snapshot time, A's face ids;
2. copy: every live archived face that A holds, streamed through the new model (Ray Data: read on CPU tasks,
   embed on an actor pool) into the new model's collection (B), same face ids, identities, metadata. A face
   already in B is skipped, so a killed job re-run continues where it stopped;
3. catch up: what the archive received since the last pass (enrollments, re-enrollments, tombstones) is applied
   to B, round after round, until a round finds only a few changes;
4. verify: B against A, face by face. A face of A that the archive never held (enrolled before archiving existed)
   cannot be embedded again: the switch is refused unless `--allow-missing` says to leave it behind. A face in B
   that A lost meanwhile is removed;
5. switch the alias to B in one call. Processes of the old model keep answering searches from A, and refuse
   writes once they see the alias moved (at most a second later; jobs/service.py), so after a grace period one
   last catch-up takes whatever they accepted in between. Rollback is `arcmatch alias rollback`: A stays until
   dropped.

The new model's calibrated threshold goes with B; a model without one is refused unless a threshold is given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from common.errors import Conflict
from embedder.errors import ImageError, ModelError
from indexer.archive import ArchivedFace, FaceArchive
from indexer.errors import CollectionNotFound
from indexer.galleries import MIGRATION_PROPERTY, Galleries, collection_name
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect, is_lite_uri
from jobs.progress import Console, silent

CATCH_UP_DONE = 16  # a catch-up round this small ends the rounds before the switch


class MissingFromArchive(Conflict):
    """Faces in service that the archive does not hold: a re-embed would leave them behind."""


@dataclass
class ReembedSummary:
    gallery: str
    source: str = ""  # A: the collection in service when the job started
    target: str = ""  # B: the new model's collection
    source_model: str = ""
    target_model: str = ""
    threshold: float | None = None
    in_source: int = 0
    archived_live: int = 0
    to_embed: int = 0
    already_there: int = 0  # in B from an earlier, killed run
    embedded: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    not_archived: int = 0  # in A, never archived: left behind only with allow_missing
    catch_up_rounds: int = 0
    caught_up: int = 0  # enrollments applied in catch-up rounds
    deleted: int = 0  # faces removed from B because they were deleted meanwhile
    in_target: int = 0
    switched: bool = False
    switch_ms: float = 0.0
    seconds: float = 0.0
    dry_run: bool = False

    def lines(self) -> list[str]:
        head = "would move" if self.dry_run else ("moved" if self.switched else "prepared")
        out = [f"{head} gallery {self.gallery!r}: {self.source} ({self.source_model}) -> {self.target} "
               f"({self.target_model}), threshold {self.threshold}",
               f"faces in service {self.in_source}, archived {self.archived_live}, to embed {self.to_embed}"
               + (f" ({self.already_there} already there from an earlier run)" if self.already_there else "")]
        if self.not_archived:
            out.append(f"faces never archived (cannot be embedded again): {self.not_archived}")
        if not self.dry_run:
            rate = self.embedded / self.seconds if self.seconds else 0.0
            out.append(f"embedded {self.embedded}, skipped {len(self.skipped)}, catch-up rounds "
                       f"{self.catch_up_rounds} ({self.caught_up} written, {self.deleted} deleted), "
                       f"{self.in_target} faces in {self.target}, {rate:.1f} faces/s over {self.seconds:.1f} s")
            if self.switched:
                out.append(f"alias {self.gallery!r} -> {self.target} in {self.switch_ms:.1f} ms; "
                           f"`arcmatch alias rollback` goes back to {self.source}")
        return out


def decode_archived(batch: dict[str, np.ndarray], spec) -> dict[str, np.ndarray]:
    """CPU stage: archived faces -> the new model's input; one that cannot be read gets an `error`."""
    from embedder.archiving import model_input

    images, errors = [], []
    blank = np.zeros((*spec.input_size, 3), dtype=np.uint8)
    for data, kind in zip(batch["image"], batch["kind"], strict=True):
        try:
            images.append(model_input(bytes(data), str(kind), spec))
            errors.append("")
        except (ImageError, ModelError) as exc:
            images.append(blank)
            errors.append(str(exc))
    out = {k: batch[k] for k in ("face_id", "identity", "source", "metadata")}
    return {**out, "error": np.asarray(errors, dtype=object), "image": np.stack(images) if images else blank[None][:0]}


def rows_of(batch: dict[str, np.ndarray]) -> tuple[list[FaceRow], list[tuple[int, str]]]:
    rows, skipped = [], []
    for i in range(len(batch["face_id"])):
        face = int(batch["face_id"][i])
        if batch["error"][i]:
            skipped.append((face, str(batch["error"][i])))
            continue
        rows.append(FaceRow(str(batch["source"][i]), str(batch["identity"][i]), batch["vector"][i], face,
                            json.loads(str(batch["metadata"][i]) or "{}")))
    return rows, skipped


def reembed(
    model: str,
    *,
    milvus: str,
    token: str | None = None,
    gallery: str = "faces",
    archive: str,
    threshold: float | None = None,
    dry_run: bool = False,
    switch: bool = True,
    allow_missing: bool = False,
    grace_s: float = 31.0,
    batch_size: int = 64,
    embed_concurrency: int = 1,
    index_type: str = "HNSW",
    console: Console | None = None,
) -> ReembedSummary:
    """Embed gallery `gallery`'s archived faces with `model` into its own collection and switch the alias.

    `grace_s` is how long the old model's processes may still be finishing writes after the switch (their
    readiness cache plus the request timeout); one more catch-up follows it."""
    from embedder.embed import open_embedder

    started, console = time.perf_counter(), console or silent()
    embedder = open_embedder(model)
    spec, calibration = embedder.spec, embedder.calibration
    threshold = threshold if threshold is not None else (calibration.threshold if calibration else None)
    if threshold is None:
        raise ModelError(f"model {spec.version} has no calibrated threshold: calibrate it (`arcmatch eval "
                         f"--calibrate`) or give --threshold, or every search after the switch would lack one")
    client = connect(milvus, token)
    galleries = Galleries(client, gallery)
    source = galleries.serving()
    if source is None:
        raise CollectionNotFound(f"gallery {gallery!r} does not exist; nothing to re-embed")
    source_index = FaceIndex(client, source)
    summary = ReembedSummary(gallery, source=source, source_model=source_index.info().model_version,
                             target=collection_name(gallery, spec.version), target_model=spec.version,
                             threshold=threshold, dry_run=dry_run)
    if summary.source_model == spec.version:
        raise Conflict(f"gallery {gallery!r} is already served by model {spec.version}")
    kept = FaceArchive(archive, gallery)

    snapshot = time.time_ns()
    live = kept.live_versions()
    in_source = set(source_index.iter_ids())
    summary.in_source, summary.archived_live = len(in_source), len(live)
    # read after A: a face enrolled meanwhile is archived before it reaches A, a deleted one keeps its entry
    summary.not_archived = len(in_source - kept.archived_ids())
    todo = {face: ns for face, ns in live.items() if face in in_source}
    existing = (set(FaceIndex(client, summary.target).iter_ids())
                if summary.target in {c.name for c in galleries.collections()} else set())
    summary.already_there = len(existing & todo.keys())
    summary.to_embed = len(todo) - summary.already_there
    if dry_run:
        summary.seconds = time.perf_counter() - started
        client.close()
        return summary
    if summary.not_archived and not allow_missing:
        raise MissingFromArchive(f"{summary.not_archived} face(s) of {source} were never archived (enrolled before "
                                 f"the archive existed) and cannot be embedded again: re-ingest them from their "
                                 f"sources first, or give --allow-missing to leave them behind")
    if galleries.is_plain_collection():  # made before aliases: becomes <gallery>__<model> behind the alias
        source = summary.source = galleries.adopt()
        source_index = FaceIndex(client, source)

    info = CollectionInfo(spec.version, spec.embedding_size, threshold, spec.to_dict())
    target = galleries.prepare(info, index_type=index_type)
    target._call("alter_collection_properties", target.collection, properties={  # who filled it, from what
        MIGRATION_PROPERTY: json.dumps({"source": source, "snapshot_ns": snapshot})})
    pending = {face: ns for face, ns in todo.items() if face not in existing}
    with console.stage("reembed", total=len(pending), unit="face") as bar:
        summary.embedded, summary.skipped = _copy(kept, pending, embedder, model, target, milvus, token,
                                                  batch_size, embed_concurrency, bar)
    since = snapshot
    with console.timed("catch up"):
        while True:
            now = time.time_ns()
            written, deleted = _catch_up(kept, since, now, embedder, target, source_index)
            summary.catch_up_rounds += 1
            summary.caught_up += written
            summary.deleted += deleted
            since = now
            # until a round is small: what arrives after it is taken by the reconcile and, past the switch, by
            # the last catch-up (writers never stop on a live gallery, so "nothing new" may never come)
            if written + deleted <= CATCH_UP_DONE or summary.catch_up_rounds >= 10:
                break
        written, removed = _reconcile(kept, embedder, source_index, target)
        summary.caught_up += written
        summary.deleted += removed
    if switch:
        began = time.perf_counter()
        galleries.switch(target.collection)
        summary.switch_ms = (time.perf_counter() - began) * 1000
        summary.switched = True
        with console.timed("after the switch"):
            console.say(f"reembed: waiting {grace_s:.0f} s for the old model's last writes, then one more catch-up")
            time.sleep(grace_s)
            written, deleted = _catch_up(kept, since, time.time_ns(), embedder, target, source_index)
            summary.caught_up += written
            summary.deleted += deleted
        # the migration is over: after a rollback, this model's processes must not write here any more
        target._call("alter_collection_properties", target.collection, properties={MIGRATION_PROPERTY: ""})
    target.flush()
    summary.in_target = target.count()
    client.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _copy(kept: FaceArchive, pending: dict[int, int], embedder, model: str, target: FaceIndex, milvus: str,
          token: str | None, batch_size: int, embed_concurrency: int, bar) -> tuple[int, list[tuple[int, str]]]:
    """The bulk pass through Ray Data: archive parts read on CPU tasks, the live versions kept, the model's
    input made there, embedded on an actor pool, written by the driver (Lite) or by write tasks (a server)."""
    if not pending:
        return 0, []
    import pyarrow as pa
    import ray
    import ray.data

    from jobs.pipelines.ingest import EmbedBatch
    from jobs.pipelines.sink import MilvusDatasink

    wanted = ray.put(pending)

    def keep_live(table: pa.Table) -> pa.Table:
        versions = ray.get(wanted)
        mask = [versions.get(f) == ns for f, ns in zip(table["face_id"].to_pylist(),
                                                      table["written_ns"].to_pylist(), strict=True)]
        return table.filter(pa.array(mask, pa.bool_())) if table.num_rows else table

    ds = ray.data.read_parquet(kept.parts("faces"), filesystem=kept.fs)
    ds = ds.map_batches(keep_live, batch_format="pyarrow")
    ds = ds.map_batches(decode_archived, fn_kwargs={"spec": embedder.spec}, batch_size=batch_size,
                        batch_format="numpy")
    gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    ds = ds.map_batches(EmbedBatch, fn_constructor_args=(str(model), None), batch_size=batch_size,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=embed_concurrency),
                        num_gpus=gpus)
    written, skipped, seen = 0, [], set()
    if is_lite_uri(milvus):
        for batch in ds.iter_batches(batch_size=min(512, max(64, batch_size)), batch_format="numpy"):
            rows, failed = rows_of(batch)
            rows = [r for r in rows if r.face_id not in seen]  # a version in two parts (a retried write): once
            seen.update(r.face_id for r in rows)
            skipped += failed
            written += target.upsert(rows)
            bar.update(len(batch["face_id"]), note=f"{written} written")
        return written, skipped
    sink = MilvusDatasink(milvus, token, target.collection, rows=rows_of)
    ds.write_datasink(sink)
    bar.update(len(pending), note=f"{sink.embedded} written")
    return sink.embedded, [(int(f), r) for f, r in sink.skipped]


def _catch_up(kept: FaceArchive, since: int, until: int, embedder, target: FaceIndex, source: FaceIndex
              ) -> tuple[int, int]:
    """Apply to B what the archive received in (since, until]: tombstones first, then every live face written
    in that window (re-enrollments after a tombstone included). Returns (faces written, faces deleted)."""
    deleted = 0
    for face, identity in kept.tombstones_between(since, until):
        if face is None:
            deleted += target.delete_identity(identity)  # faces enrolled after the tombstone come back below
        elif target.delete_face(identity, face):
            deleted += 1
    live = kept.live_versions()
    fresh = {face for face, ns in live.items() if since < ns <= until}
    # only faces the old model's store acknowledged: an archived face whose store write failed was answered
    # with an error, and its retry writes it again
    acknowledged = set(source.vectors(sorted(fresh))) if fresh else set()
    return _embed_into(target, embedder, list(kept.entries(acknowledged)) if acknowledged else []), deleted


def _reconcile(kept: FaceArchive, embedder, source: FaceIndex, target: FaceIndex) -> tuple[int, int]:
    """B made equal to A face by face: a face of A missing from B (its store write finished after the plan read
    A) is embedded from the archive; a face in B that A does not hold leaves B unless the archive holds it live
    (then the new model's own replicas enrolled it: it stays). Returns (faces written, faces removed); faces of A
    the archive never held stay missing (the plan counted them)."""
    in_source, in_target = set(source.iter_ids()), set(target.iter_ids())
    extra = sorted(in_target - in_source - kept.live_versions().keys())
    if extra:
        target.delete_ids(extra)
    missing = in_source - in_target
    return _embed_into(target, embedder, list(kept.entries(missing)) if missing else []), len(extra)


def _embed_into(target: FaceIndex, embedder, entries: list[ArchivedFace], batch: int = 64) -> int:
    """A few archived faces embedded in this process (catch-up rounds; the bulk goes through Ray Data)."""
    from embedder.archiving import model_input

    written = 0
    for start in range(0, len(entries), batch):
        chunk, images = [], []
        for entry in entries[start : start + batch]:
            try:
                images.append(model_input(entry.image, entry.kind, embedder.spec))
                chunk.append(entry)
            except (ImageError, ModelError):
                continue  # the bulk pass reported these with their reason
        if chunk:
            vectors = embedder.embed(np.stack(images))
            written += target.upsert([FaceRow(e.source, e.identity, v, e.face_id, json.loads(e.metadata or "{}"))
                                      for e, v in zip(chunk, vectors, strict=True)])
    return written
