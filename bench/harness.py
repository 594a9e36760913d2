"""What the benchmark scripts share: model directories for the shared ONNX models, LFW pair scores from stored
vectors, a Milvus server and the API on loopback, and printing/saving their figures."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CACHE = Path(tempfile.gettempdir()) / "arcmatch-bench-cache"  # embedded images, kept between benchmark runs


# one person under two LFW names that are not the same words (those are found by lfw_person): seen among the
# "strangers" a 1,000-person gallery let through at FPIR 0.1%, where they are the enrolled person, not strangers
LFW_ALIASES = {"Hassan_Wirajuda": "Hasan_Wirayuda", "Mireya_Elisa_Moscoso_Rodriguez": "Mireya_Moscoso"}


def lfw_person(name: str) -> frozenset[str]:
    """Who an LFW name is: its words whatever their order or spelling of the joins (Choi_Sung-hong and
    Sung_Hong_Choi, Wang_Nan and Nan_Wang are one person each), LFW_ALIASES followed."""
    name = LFW_ALIASES.get(name, name)
    return frozenset(name.replace("-", "_").lower().split("_"))


def onnx_model_dir(workdir: Path, spec_file: str, name: str = "mobilefacenet") -> Path:
    """A model directory as a user would lay it out: the shared MobileFaceNet ONNX file (linked, never copied) and
    a spec from bench/specs."""
    directory = workdir / name
    directory.mkdir()
    (directory / "model.onnx").symlink_to(SHARED / "models" / "mobilefacenet" / "MobileFaceNet.onnx")
    (directory / "spec.json").write_text((ROOT / "bench" / "specs" / spec_file).read_text())
    return directory


def embed_cached(model_dir: Path, paths: list[Path], cache: Path) -> dict[str, np.ndarray]:
    """Path -> unit vector, cached in `cache` (.npz) so the benchmarks embed LFW once."""
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return dict(zip(data["paths"].tolist(), data["vectors"], strict=True))
    from embedder.embed import open_embedder
    from embedder.preprocess import decode_image

    embedder = open_embedder(model_dir)
    vectors = []
    for start in range(0, len(paths), 256):
        chunk = paths[start : start + 256]
        vectors.append(embedder.embed(np.stack([decode_image(p.read_bytes(), embedder.spec) for p in chunk])))
        print(f"  embedded {start + len(chunk)}/{len(paths)}", file=sys.stderr, end="\r")
    out = np.concatenate(vectors)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array([str(p) for p in paths]), vectors=out)
    return dict(zip([str(p) for p in paths], out, strict=True))


def lfw_pair_threshold(vectors: dict[str, np.ndarray], far: float = 1e-3) -> dict:
    """The usual calibration of a model: the threshold at a pair false-accept rate on the official LFW pairs,
    from vectors keyed by image path (embed_cached)."""
    from embedder.evaluation import threshold_at_far
    from embedder.pairs import read_pairs

    pairs = read_pairs(SHARED / "data" / "lfw_pairs.txt", SHARED / "data" / "lfw_gray")
    scores = np.array([float(vectors[str(a)] @ vectors[str(b)]) for a, b in zip(pairs.left, pairs.right,
                                                                                 strict=True)])
    threshold, measured, tar = threshold_at_far(scores, np.asarray(pairs.same), far)
    return {"threshold": threshold, "pair_far": measured, "tar": round(tar, 4), "pairs": len(scores)}


def pair_scores(stored: dict[int, np.ndarray], pairs, lfw: Path) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of LFW pairs from vectors read back from Milvus (keyed by face_id of the path relative to
    `lfw`), and a mask of the pairs whose two images both have a vector (an image skipped has none)."""
    from indexer.ids import face_id

    def vector(path: str):
        return stored.get(face_id(Path(path).relative_to(lfw).as_posix()))

    scores, present = [], []
    for a, b in zip(pairs.left, pairs.right, strict=True):
        va, vb = vector(a), vector(b)
        present.append(va is not None and vb is not None)
        scores.append(float(va @ vb) if present[-1] else np.nan)
    return np.array(scores), np.array(present)


def start_milvus_server(base_dir: Path, **config):
    """The PyPI `milvus` package's standalone server on loopback: (server, uri). The caller stops it. `config` sets
    milvus.yaml keys by dotted name (e.g. `**{"common.session.ttl": 10}`)."""
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base_dir))
    for key, value in config.items():
        server.config.set(key, value)
    server.start()
    return server, f"http://127.0.0.1:{server.listen_port}"


@contextmanager
def milvus_store(lite_uri: str, server_dir: Path | None = None) -> Iterator[str]:
    """The URI a benchmark runs against: `lite_uri` (a Milvus Lite file, or a server the caller runs), or, with
    `server_dir`, the `milvus` package's server on loopback, started here and stopped when the block ends."""
    if server_dir is None:
        yield lite_uri
        return
    server, uri = start_milvus_server(server_dir)
    try:
        yield uri
    finally:
        server.stop()


def pin_apart(server) -> dict[str, list[int]]:
    """Give the Milvus server the upper half of this machine's cores and this process (with every process it
    starts later: the API, Ray) the rest.

    On a small machine the server's search alone keeps every core busy (on 2 cores about 1.9 cores per one-client
    search at 1M faces), so any other process's CPU time lands inside someone's search and the latency measured
    is the scheduler's. Apart, as a deployment would run them, each side's latency is its own.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--pin needs at least 2 CPU cores")
    mine, theirs = cores[: len(cores) // 2], cores[len(cores) // 2 :]
    pending = [server.server_proc.pid]
    while pending:  # the server process, every thread of it, and its children's
        pid = pending.pop()
        for task in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(task), theirs)
            children = Path(f"/proc/{pid}/task/{task}/children")
            pending += [int(c) for c in children.read_text().split()] if children.exists() else []
    os.sched_setaffinity(0, mine)
    return {"server_cores": theirs, "api_and_client_cores": mine}


def demo_folds(vectors: np.ndarray, labels: np.ndarray, names: np.ndarray, *, enrolled: int = 50,
               photos: int = 3) -> list:
    """Demo-shaped folds over `names` in order, as indexer.calibration.Trials: each takes 2 x `enrolled`
    identities, the first half enrolled with their first `photos` images in the gallery and the rest as probes,
    the second half unknown; the gallery searched exactly in NumPy, as the demo's flat Lite index does."""
    from indexer.calibration import Trials

    photo = np.zeros(len(labels), dtype=int)  # each image's number within its identity
    for name in names:
        photo[labels == name] = np.arange(np.sum(labels == name))
    folds = []
    for start in range(0, len(names) - 2 * enrolled + 1, 2 * enrolled):
        known_names, unknown = names[start : start + enrolled], names[start + enrolled : start + 2 * enrolled]
        gallery = np.isin(labels, known_names) & (photo < photos)
        known = np.isin(labels, known_names) & (photo >= photos)
        scores = vectors[known] @ vectors[gallery].T
        folds.append(Trials(nonmated=(vectors[np.isin(labels, unknown)] @ vectors[gallery].T).max(axis=1),
                            mated_right=labels[gallery][scores.argmax(axis=1)] == labels[known],
                            mated_score=scores.max(axis=1)))
    return folds


def rank1_and_rejected(trials, threshold: float) -> tuple[float, float]:
    """Rank-1 above the threshold and the share of unknown probes rejected, of one set of Trials."""
    rates = trials.rates(threshold)
    return 1.0 - rates.fnir, 1.0 - rates.fpir


def emit(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text)


def latencies(call: Callable, items: Iterable) -> list[float]:
    """Seconds each `call(item)` took, one after another (one client)."""
    out = []
    for item in items:
        started = time.perf_counter()
        call(item)
        out.append(time.perf_counter() - started)
    return out


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def server_timing(response) -> dict[str, float]:
    """Seconds per phase of an answer's Server-Timing header (`app;dur=12.3, search;dur=10.1`, in ms); {} without."""
    phases = {}
    for part in response.headers.get("server-timing", "").split(", "):
        if ";dur=" in part:
            name, ms = part.split(";dur=")
            phases[name] = float(ms) / 1000
    return phases
