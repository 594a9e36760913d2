"""The clustering edge threshold `arcmatch cluster` reads from a gallery's own neighbour scores, against the best
threshold of a sweep, per data set and method.

    .venv/bin/python bench/cluster_threshold.py [--demo DEMO_WORKDIR] [--k 20] [--out FILE]

Data sets, every face treated as unlabelled and scored against its true person only at the end:
- LFW-gray: all 13,233 faces (5,749 people), the shared MobileFaceNet as MODEL.md says (cached, bench/harness.py);
- ORL: all 400 faces (40 people), the same model behind the square (0, 0.1, 1, 0.92) of each 92x112 image;
- synthetic (with --demo): the demo's held-out people (every photo of its gallery, known and unknown probes and
  calibration people, none seen in training), embedded by the demo's own trained model.
The k-NN graph (k = 20) is computed exactly in NumPy, as the job's Milvus searches would return it. The job's rule
(indexer/edge_threshold.fit_neighbours) chooses the threshold from the graph's scores alone; each method then
clusters at that threshold, at the one the job runs it at ("chosen": connected components and Leiden raise it to
where their clusters agree best with Chinese whispers', indexer/method_threshold.py) and at every threshold of
the sweep (0.30-0.95, step 0.025). For comparison, the other
thresholds the job could use: the model's (LFW pairs, FAR 1e-3; the demo's own calibration for synthetic faces)
and a gallery calibration of the same faces with their names (the top-1 rule at FPIR 1%, indexer/calibration.py).
Quality: BCubed F (indexer/clustering.bcubed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import CACHE, SHARED, embed_cached, emit, lfw_pair_threshold, onnx_model_dir  # noqa: E402
from indexer.calibration import Trials  # noqa: E402
from indexer.clustering import Graph, bcubed, cluster_graph  # noqa: E402
from indexer.edge_threshold import fit_neighbours, ranked_scores  # noqa: E402
from indexer.method_threshold import raised_threshold  # noqa: E402

LFW = SHARED / "data" / "lfw_gray"
ORL = SHARED / "data" / "orl_att_faces"
ORL_CROP = (0.0, 0.1, 1.0, 0.92)
METHODS = ("leiden", "chinese-whispers", "connected")
SWEEP = [round(float(t), 3) for t in np.arange(0.30, 0.951, 0.025)]
DEMO_GROUPS = ("gallery", "known_probes", "unknown_probes", "calibration")


def knn(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed hits (src, dst, score) of each face's k nearest other faces, exact, in row blocks."""
    n = len(vectors)
    idx, scores = np.empty((n, k), np.int64), np.empty((n, k), np.float32)
    for start in range(0, n, 2048):
        sims = vectors[start : start + 2048] @ vectors.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -2.0
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        idx[start : start + 2048] = part
        scores[start : start + 2048] = np.take_along_axis(sims, part, 1)
    return np.repeat(np.arange(n), k), idx.ravel(), scores.ravel()


def calibration_threshold(vectors: np.ndarray, people: np.ndarray, fpir: float = 0.01) -> float:
    """The top-1 gallery calibration of these faces with their names: every face's best score against other
    people's faces, the threshold that accepts `fpir` of them."""
    _, person = np.unique(people, return_inverse=True)
    best = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), 2048):
        sims = vectors[start : start + 2048] @ vectors.T
        sims[person[start : start + 2048, None] == person[None, :]] = -2.0
        best[start : start + 2048] = sims.max(axis=1)
    return Trials(best, np.zeros(0, bool), np.zeros(0, np.float32)).threshold_for(fpir)


def lfw() -> tuple[np.ndarray, np.ndarray, float]:
    paths = sorted(LFW.glob("*/*.jpg"))
    vectors = embed_cached(onnx_model_dir(Path(tempfile.mkdtemp()), "mobilefacenet.spec.json"), paths,
                           CACHE / "lfw_gray_mobilefacenet.npz")
    model = lfw_pair_threshold(vectors)["threshold"]
    return np.stack([vectors[str(p)] for p in paths]), np.array([p.parent.name for p in paths]), model


def orl(model_threshold: float) -> tuple[np.ndarray, np.ndarray, float]:
    directory = onnx_model_dir(Path(tempfile.mkdtemp()), "mobilefacenet.spec.json", name="mobilefacenet-orl")
    spec = json.loads((directory / "spec.json").read_text())
    (directory / "spec.json").write_text(json.dumps({**spec, "crop_box": list(ORL_CROP)}))
    paths = sorted(ORL.glob("s*/*.pgm"))
    vectors = embed_cached(directory, paths, CACHE / "orl_mobilefacenet.npz")
    return np.stack([vectors[str(p)] for p in paths]), np.array([p.parent.name for p in paths]), model_threshold


def synthetic(workdir: Path) -> tuple[np.ndarray, np.ndarray, float]:
    from PIL import Image

    from embedder.embed import open_embedder
    from embedder.sources import list_images

    embedder = open_embedder(workdir / "model")
    items = [i for group in DEMO_GROUPS for i in list_images(workdir / f"{group}.csv")]
    items = list({i.path: i for i in items}.values())  # a photo listed twice is one face
    vectors = np.concatenate([embedder.embed(np.stack([np.asarray(Image.open(i.path).convert("RGB"))
                                                       for i in items[start : start + 512]]))
                              for start in range(0, len(items), 512)])
    return vectors, np.array([i.identity for i in items]), embedder.calibration.threshold


def one_set(name: str, vectors: np.ndarray, people: np.ndarray, model: float, k: int) -> dict:
    vectors = vectors.astype(np.float32)
    n = len(vectors)
    src, dst, weight = knn(vectors, k)
    started = time.perf_counter()
    fit = fit_neighbours(ranked_scores(n, src, dst, weight, k))
    fit_seconds = time.perf_counter() - started
    everything = Graph.from_edges(n, src, dst, weight, -1.0)
    chosen = {"neighbours": fit.threshold if fit else None, "model": round(float(model), 4),
              "calibration_fpir_1pct": round(calibration_threshold(vectors, people), 4)}
    result: dict = {"faces": n, "people": len(np.unique(people)), "k": k, "thresholds": chosen,
                    "fit": fit.line() if fit else None, "fit_seconds": round(fit_seconds, 2), "methods": {}}
    for method in METHODS:
        scored: dict[float, float] = {}
        for t in sorted({*SWEEP, *(v for v in chosen.values() if v is not None)}):
            scored[t] = round(bcubed(people, cluster_graph(everything.above(t), method))[2], 4)
        best = max(SWEEP, key=lambda t: scored[t])
        chosen_for = {}
        if fit is not None:
            started = time.perf_counter()
            raised = raised_threshold(Graph.from_edges(n, src, dst, weight, fit.threshold), fit.threshold,
                                      fit.same_mean, method)
            f = round(bcubed(people, raised.labels)[2], 4)
            chosen_for = {"at_chosen": {"threshold": raised.threshold, "bcubed_f": f,
                                        "below_best": round(scored[best] - f, 4), "agreement": raised.agreement,
                                        "clusterings": raised.tried,
                                        "seconds": round(time.perf_counter() - started, 1)}}
        result["methods"][method] = {
            "best": {"threshold": best, "bcubed_f": scored[best]}, **chosen_for,
            **{f"at_{key}": {"threshold": t, "bcubed_f": scored[t], "below_best": round(scored[best] - scored[t], 4)}
               for key, t in chosen.items() if t is not None},
            "sweep": {str(t): scored[t] for t in SWEEP}}
        print(name, method, {key: v for key, v in result["methods"][method].items() if key != "sweep"},
              file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="a demo's work directory (`arcmatch demo` keeps it): its model "
                                                  "and held-out photos are the synthetic data set")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--sets", nargs="*", default=["LFW-gray", "ORL"], choices=["LFW-gray", "ORL"],
                        help="the real-face sets to run (the synthetic one runs with --demo)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not LFW.is_dir() or not ORL.is_dir():
        raise SystemExit(f"LFW-gray or ORL not found under {SHARED / 'data'}: this benchmark needs ../shared")
    vectors, people, model = lfw()
    result = {}
    if "LFW-gray" in args.sets:
        result["LFW-gray"] = one_set("LFW-gray", vectors, people, model, args.k)
    if "ORL" in args.sets:
        result["ORL"] = one_set("ORL", *orl(model), args.k)
    if args.demo:
        result["synthetic"] = one_set("synthetic", *synthetic(args.demo), args.k)
    emit(result, args.out)


if __name__ == "__main__":
    main()
