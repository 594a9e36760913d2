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
4. verify: B against A, face by face. A face of A that B lacks (never archived, or archived in a form this model
   cannot read, or refused on reading: no face found, below the quality gate) refuses the switch unless
   `--allow-missing` says to leave it behind; the dry run predicts which, by reading every pending face the
   way the copy will. A face in B that A lost meanwhile is removed;
5. switch the alias to B in one call. Processes of the old model keep answering searches from A, and refuse
   writes once they see the alias moved (at most a second later; indexer/writer.py), so after a grace period one
   last catch-up takes whatever they accepted in between. Rollback is `arcmatch alias rollback`: A stays until
   dropped.

Photos archived for a box-crop model are aligned for a five-point model on the landmarks located at archiving, or
detected again inside the old model's crop box (the face that was in the gallery) by the configured face policy.
The new model's calibrated threshold goes with B; a model without one is refused unless a threshold is given.
"""

from __future__ import annotations

import json
import time

import numpy as np

from common.errors import Conflict
from embedder.errors import ImageError, ModelError
from embedder.faces import FacePolicy
from indexer import distinct
from indexer.archive import ArchivedFace, FaceArchive
from indexer.calibration import set_target, target_fpir
from indexer.errors import CollectionNotFound
from indexer.galleries import Galleries, collection_name
from indexer.milvus import Property
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect, is_lite_uri
from indexer.writer import GalleryWriter
from jobs.pipelines.reading import Reader, Skipped, decoded, plan, rows_of, unreadable, why
from jobs.pipelines.reembed_summary import FacesLeftBehind, MissingFromArchive, ReembedSummary  # noqa: F401
from jobs.progress import Console, silent

CATCH_UP_DONE = 16  # a catch-up round this small ends the rounds before the switch


def reembed(
    model: str,
    *,
    milvus: str,
    token: str | None = None,
    gallery: str = "faces",
    archive: str,
    threshold: float | None = None,
    policy: FacePolicy | None = None,
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

    `policy` finds the faces of photos archived for a box-crop model when `model` wants five-point aligned faces
    (its detector and quality gate, as ingestion's). `grace_s` is how long the old model's processes may still be
    finishing writes after the switch (their readiness cache plus the request timeout); one more catch-up follows
    it. FacesLeftBehind (with the summary) when B would lack faces of A and not `allow_missing`."""
    from embedder.embed import open_embedder

    started, console = time.perf_counter(), console or silent()
    embedder = open_embedder(model)
    spec, calibration = embedder.spec, embedder.calibration
    client = connect(milvus, token)
    galleries = Galleries(client, gallery)
    source = galleries.serving()
    if source is None:  # before the threshold: a gallery not in this store is the first thing to say
        raise CollectionNotFound(f"gallery {gallery!r} does not exist; nothing to re-embed")
    threshold = threshold_of(embedder, threshold)
    source_index = FaceIndex(client, source)
    source_info = source_index.info()
    summary = ReembedSummary(gallery, source=source, source_model=source_info.model_version,
                             target=collection_name(gallery, spec.version), target_model=spec.version,
                             threshold=threshold, dry_run=dry_run)
    if summary.source_model == spec.version:
        raise Conflict(f"gallery {gallery!r} is already served by model {spec.version}")
    box = (source_info.model_spec or {}).get("crop_box")
    reader = Reader(spec, policy, tuple(box) if box else None)
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
    pending = {face: ns for face, ns in todo.items() if face not in existing}
    planned = plan(kept, pending, reader)
    summary.kinds, summary.refused_kinds, summary.skipped = planned.kinds, planned.refused_kinds, planned.skipped
    readable = planned.readable
    if dry_run:
        with console.stage("read", total=len(readable), unit="face") as bar:
            summary.skipped += unreadable(kept, readable, reader, batch_size, bar)
        summary.embedded = len(pending) - len(summary.skipped)
        summary.left_behind = summary.not_archived + len(summary.skipped)
        summary.seconds = time.perf_counter() - started
        client.close()
        return summary
    if (summary.not_archived or summary.skipped) and not allow_missing:
        client.close()
        summary.left_behind = summary.not_archived + len(summary.skipped)
        reasons = why(summary.skipped, summary.not_archived)
        raise MissingFromArchive(f"{summary.left_behind} face(s) of {source} cannot be embedded again ({reasons}): "
                                 f"re-ingest them from their sources first, or give --allow-missing to leave them "
                                 f"behind", summary)
    if galleries.is_plain_collection():  # made before aliases: becomes <gallery>__<model> behind the alias
        source = summary.source = galleries.adopt()
        source_index = FaceIndex(client, source)

    info = CollectionInfo.of_model(spec, threshold, calibration.tail_reference if calibration else None)
    target = galleries.prepare(info, index_type=index_type)
    target.set_properties({  # who filled it, from what
        Property.MIGRATION: json.dumps({"source": source, "snapshot_ns": snapshot})})
    with console.stage("reembed", total=len(readable), unit="face") as bar:
        summary.embedded, failed = copy_archived(kept, readable, model, reader, target, milvus, token, batch_size,
                                                 embed_concurrency, bar)
        summary.skipped += failed
    since = snapshot
    with console.timed("catch up"):
        while True:
            now = time.time_ns()
            written, deleted = _catch_up(kept, since, now, embedder, reader, target, source_index, summary.skipped)
            summary.catch_up_rounds += 1
            summary.caught_up += written
            summary.deleted += deleted
            since = now
            # until a round is small: what arrives after it is taken by the reconcile and, past the switch, by
            # the last catch-up (writers never stop on a live gallery, so "nothing new" may never come)
            if written + deleted <= CATCH_UP_DONE or summary.catch_up_rounds >= 10:
                break
        written, removed, left = _reconcile(kept, embedder, reader, source_index, target, summary.skipped)
        summary.caught_up += written
        summary.deleted += removed
        summary.left_behind = len(left)
    if left and switch and not allow_missing:
        target.flush()
        summary.in_target = target.count()
        summary.seconds = time.perf_counter() - started
        client.close()
        raise FacesLeftBehind(f"the switch is refused: {len(left)} face(s) in service are not in {target.collection} "
                              f"({why([s for s in summary.skipped if s[0] in left], summary.not_archived)}); give "
                              f"--allow-missing to switch without them", summary)
    if switch:
        distinct.copy(source_index, target)  # people confirmed different stay different whatever the model
        set_target(target, target_fpir(source_index))  # the FPIR the gallery's calibrations aim at
        began = time.perf_counter()
        galleries.switch(target.collection, lose=None)  # verified face by face above
        summary.switch_ms = (time.perf_counter() - began) * 1000
        summary.switched = True
        with console.timed("after the switch"):
            console.say(f"reembed: waiting {grace_s:.0f} s for the old model's last writes, then one more catch-up")
            time.sleep(grace_s)
            written, deleted = _catch_up(kept, since, time.time_ns(), embedder, reader, target, source_index,
                                         summary.skipped)
            summary.caught_up += written
            summary.deleted += deleted
        # the migration is over: after a rollback, this model's processes must not write here any more
        target.set_properties({Property.MIGRATION: ""})
    target.flush()
    summary.in_target = target.count()
    client.close()
    summary.seconds = time.perf_counter() - started
    return summary


def threshold_of(embedder, threshold: float | None) -> float:
    """The threshold a collection filled from the archive is made with: the one given, else the model's
    calibrated one; ModelError where there is neither, or every search of the gallery would lack one."""
    calibration = embedder.calibration
    threshold = threshold if threshold is not None else (calibration.threshold if calibration else None)
    if threshold is None:
        raise ModelError(f"model {embedder.spec.version} has no calibrated threshold: calibrate it (`arcmatch eval "
                         f"--calibrate`) or give --threshold, or every search of the gallery would lack one")
    return threshold


def copy_archived(kept: FaceArchive, pending: dict[int, int], model: str, reader: Reader, target: FaceIndex,
                  milvus: str, token: str | None, batch_size: int, embed_concurrency: int,
                  bar) -> tuple[int, list[Skipped]]:
    """The bulk pass through Ray Data (a re-embed's copy, a restore): the faces read on CPU tasks
    (jobs/pipelines/reading.py), embedded on an actor pool, written by the driver (Lite) or by write tasks (a
    server). Returns (faces written, faces skipped with the reason)."""
    if not pending:
        return 0, []
    import ray
    import ray.data

    from jobs.pipelines.ingest import EmbedBatch
    from jobs.pipelines.sink import MilvusDatasink

    gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    ds = decoded(kept, pending, reader, batch_size)
    ds = ds.map_batches(EmbedBatch, fn_constructor_args=(str(model), None), batch_size=batch_size,
                        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=embed_concurrency),
                        num_gpus=gpus)
    written, skipped, seen = 0, {}, set()
    if is_lite_uri(milvus):
        for batch in ds.iter_batches(batch_size=min(512, max(64, batch_size)), batch_format="numpy"):
            rows, failed = rows_of(batch)
            rows = [r for r in rows if r.face_id not in seen]  # a version in two parts (a retried write): once
            seen.update(r.face_id for r in rows)
            skipped.update({s[0]: s for s in failed})
            written += GalleryWriter(target).upsert(rows)
            bar.update(len(batch["face_id"]), note=f"{written} written")
        return written, sorted(skipped.values())
    sink = MilvusDatasink(milvus, token, target.collection, rows=rows_of)
    ds.write_datasink(sink)
    bar.update(len(pending), note=f"{sink.embedded} written")
    # rows_of's (face, identity, source, reason), or an upsert's refusal (source, reason)
    failed = [s if len(s) == 4 else (-1, "", *s) for s in sink.skipped]
    return sink.embedded, sorted({s[0]: s for s in failed}.values())


def _catch_up(kept: FaceArchive, since: int, until: int, embedder, reader: Reader, target: FaceIndex,
              source: FaceIndex, skipped: list[Skipped]) -> tuple[int, int]:
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
    entries = list(kept.entries(acknowledged)) if acknowledged else []
    return len(_embed_into(target, embedder, reader, entries, skipped)), deleted


def _reconcile(kept: FaceArchive, embedder, reader: Reader, source: FaceIndex, target: FaceIndex,
               skipped: list[Skipped]) -> tuple[int, int, set[int]]:
    """B made equal to A face by face: a face of A missing from B (its store write finished after the plan read
    A) is embedded from the archive; a face in B that A does not hold leaves B unless the archive holds it live
    (then the new model's own replicas enrolled it: it stays). Returns (faces written, faces removed, the faces
    of A that B still lacks: never archived, or unreadable for this model)."""
    in_source, in_target = set(source.iter_ids()), set(target.iter_ids())
    extra = sorted(in_target - in_source - kept.live_versions().keys())
    if extra:
        target.delete_ids(extra)
    missing = in_source - in_target
    written = _embed_into(target, embedder, reader, list(kept.entries(missing)) if missing else [], skipped)
    left = missing - written
    if left:  # those A deleted meanwhile are not behind
        left = set(source.vectors(sorted(left)))
    return len(written), len(extra), left


def _embed_into(target: FaceIndex, embedder, reader: Reader, entries: list[ArchivedFace],
                skipped: list[Skipped], batch: int = 64) -> set[int]:
    """A few archived faces embedded in this process (catch-up rounds; the bulk goes through Ray Data); a face
    that cannot be read joins `skipped` unless it is there already. Returns the face ids written."""
    written, known = set(), {s[0] for s in skipped}
    for start in range(0, len(entries), batch):
        chunk, images = [], []
        for entry in entries[start : start + batch]:
            try:
                images.append(reader.read(entry.image, entry.kind))
                chunk.append(entry)
            except (ImageError, ModelError) as exc:
                if entry.face_id not in known:
                    skipped.append((entry.face_id, entry.identity, entry.source, str(exc)))
                    known.add(entry.face_id)
        if chunk:
            vectors = embedder.embed(np.stack(images))
            GalleryWriter(target).upsert([FaceRow(e.source, e.identity, v, e.face_id, json.loads(e.metadata or "{}"))
                           for e, v in zip(chunk, vectors, strict=True)])
            written.update(e.face_id for e in chunk)
    return written
