"""`arcmatch calibrate` as a user runs it, on a gallery made of LFW-gray: the README's example output and the curve
in docs/img/calibration_curve.png come from here.

The gallery (a Milvus Lite file): 300 people with two photos each, drawn from those with three or more, and
500 photos of people never enrolled ingested as unlabelled faces (the strangers the tail calibration counts
too). Vectors: the shared MobileFaceNet behind its LFW crop box (cached, bench/harness.py), written straight into
the collection. Then the CLI itself runs: `arcmatch calibrate --fpir 0.01 --plot ...`, and a check of what the
kept threshold really does on the other photos of the enrolled and on 2,000 other never-enrolled people.

    .venv/bin/python bench/calibrate_example.py [--plot docs/img/calibration_curve.png] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.calibrate_tail import load  # noqa: E402
from indexer.calibration import stored  # noqa: E402
from indexer.ids import UNLABELLED, face_id  # noqa: E402
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect  # noqa: E402
from jobs.cli import main as arcmatch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", type=Path, default=Path("calibration_curve.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vectors, people = load()
    rng = np.random.default_rng(args.seed)
    by_person = {n: rng.permutation(np.flatnonzero(people == n)) for n in np.unique(people)}
    three = [n for n, rows in by_person.items() if len(rows) >= 3]
    enrolled = set(rng.choice(three, 300, replace=False))
    others = rng.permutation([n for n in by_person if n not in enrolled])
    strangers, unknown = others[:500], others[500:2500]

    uri = str(Path(tempfile.mkdtemp()) / "lfw.db")
    client = connect(uri)
    index = FaceIndex(client, "lfw")
    index.ensure(CollectionInfo("mobilefacenet-lfw-crop", vectors.shape[1], 0.37), index_type="FLAT")
    rows = [FaceRow(f"{n}/{k}", n, vectors[r], face_id(f"{n}/{k}")) for n in sorted(enrolled)
            for k, r in enumerate(by_person[n][:2])]
    rows += [FaceRow(f"u/{n}", UNLABELLED, vectors[by_person[n][0]], face_id(f"u/{n}")) for n in strangers]
    index.upsert(rows)
    index.flush()
    client.close()

    code = arcmatch(["calibrate", "--milvus", uri, "--gallery", "lfw", "--fpir", "0.01", "--plot",
                     str(args.plot)])
    client = connect(uri)
    found = stored(FaceIndex(client, "lfw"))
    client.close()
    gallery = [r for r in rows if r.identity != UNLABELLED]
    g = np.stack([r.vector for r in gallery])
    names = np.array([r.identity for r in gallery])
    stranger_best = (vectors[[by_person[n][0] for n in unknown]] @ g.T).max(axis=1)
    known = [(n, r) for n in sorted(enrolled) for r in by_person[n][2:]]
    scores = vectors[[r for _, r in known]] @ g.T
    right = names[scores.argmax(axis=1)] == np.array([n for n, _ in known])
    found_at = right & (scores.max(axis=1) >= found.threshold)
    print(f"\nchecked on photos the calibration never saw: FPIR {float((stranger_best >= found.threshold).mean()):.4f}"
          f" on {len(unknown)} people never enrolled, FNIR {1 - float(found_at.mean()):.4f} on {len(known)} other "
          f"photos of the enrolled (exit {code})")


if __name__ == "__main__":
    main()
