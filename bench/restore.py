"""A gallery made again from its face archive: `arcmatch archive restore` on real faces, against ingesting the
same photos, side by side.

The gallery is bench/reembed.py's (LFW-gray: each enrolled person's first image and every image after their
fifth, 2,140 faces of 420 people), ingested with the shared MobileFaceNet behind its LFW crop box into a Milvus
Lite file with its archive, then a face and a person deleted. Each round, alternating: the same JPEGs ingested into
a scratch Lite file, and the gallery restored from the archive into a fresh Lite file and archive (the move from one
store to another). Checked every round: the restored gallery holds every face of the original under its own id and
identity, none of the deleted, and each vector equals the original's (the lowest cosine is reported).

    .venv/bin/python bench/restore.py [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, onnx_model_dir  # noqa: E402
from bench.reembed import split  # noqa: E402
from embedder.sources import write_manifest  # noqa: E402
from indexer.archive import FaceArchive  # noqa: E402
from indexer.store import FaceIndex, connect  # noqa: E402
from jobs.pipelines.ingest import ingest  # noqa: E402
from jobs.pipelines.restore import restore  # noqa: E402
from jobs.runtime import init_ray  # noqa: E402
from jobs.service import IdentityService  # noqa: E402
from jobs.settings import Settings  # noqa: E402

THRESHOLD = 0.37  # the collection's threshold, as a user gives it: the shipped ONNX model has no calibration


def stored(uri: str, gallery: str) -> dict[int, tuple[str, np.ndarray]]:
    client = connect(uri)
    index = FaceIndex(client, gallery)
    ids = list(index.iter_ids())
    rows = index.rows(ids)
    vectors = index.vectors(ids)
    client.close()
    return {face: (rows[face].identity, vectors[face]) for face in ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    init_ray(num_cpus=2)
    workdir = Path(tempfile.mkdtemp(prefix="restore-bench-"))
    model = onnx_model_dir(workdir, "mobilefacenet.spec.json")
    _, gallery, _, _ = split()
    manifest = workdir / "gallery.csv"
    write_manifest(manifest, gallery)
    dev, dev_archive = str(workdir / "dev.db"), str(workdir / "dev.archive")
    began = time.perf_counter()
    made = ingest(manifest, model, milvus=dev, gallery="faces", archive=dev_archive, index_type="FLAT")
    built_s = time.perf_counter() - began
    service = IdentityService.open(Settings(model=model, milvus_uri=dev, gallery="faces", archive_uri=dev_archive,
                                            _env_file=None))
    first = service.index.faces_of(gallery[0].identity)
    service.delete_face(gallery[0].identity, int(first[0]["id"]))
    deleted_identity = gallery[-1].identity
    service.delete_identity(deleted_identity)
    service.close()
    original = stored(dev, "faces")
    result = {"gallery_faces": made.embedded, "ingest_s": round(built_s, 1), "after_deletes": len(original),
              "archive_bytes_per_face": round(FaceArchive(dev_archive, "faces").stats().bytes / len(original)),
              "rounds": []}
    for round_ in range(args.repeats):
        scratch = str(workdir / f"scratch-{round_}.db")
        began = time.perf_counter()
        direct = ingest(manifest, model, milvus=scratch, gallery="faces", index_type="FLAT")
        ingest_s = time.perf_counter() - began
        target, target_archive = str(workdir / f"prod-{round_}.db"), str(workdir / f"prod-{round_}.archive")
        began = time.perf_counter()
        summary = restore(str(model), milvus=target, gallery="faces", archive=dev_archive, archive_to=target_archive,
                          threshold=THRESHOLD, index_type="FLAT")
        restore_s = time.perf_counter() - began
        moved = stored(target, "faces")
        same_ids = moved.keys() == original.keys()
        same_names = same_ids and all(moved[f][0] == original[f][0] for f in original)
        lowest = min(float(np.dot(moved[f][1], original[f][1])) for f in original) if same_ids else None
        result["rounds"].append({
            "ingest_faces_per_s": round(direct.embedded / ingest_s, 1),
            "restore_faces_per_s": round(summary.embedded / restore_s, 1), "restore_s": round(restore_s, 1),
            "restored": summary.embedded, "skipped": len(summary.skipped), "same_ids": same_ids,
            "same_identities": same_names, "lowest_cosine": lowest,
            "deleted_back": any(name == deleted_identity for name, _ in moved.values()),
            "archive_copied": summary.archived})
        print(result["rounds"][-1], flush=True)
    rates = [(r["ingest_faces_per_s"], r["restore_faces_per_s"]) for r in result["rounds"]]
    result["median_ingest_faces_per_s"] = float(np.median([a for a, _ in rates]))
    result["median_restore_faces_per_s"] = float(np.median([b for _, b in rates]))
    result["median_ratio"] = round(float(np.median([b / a for a, b in rates])), 2)
    emit(result, args.out)


if __name__ == "__main__":
    main()
