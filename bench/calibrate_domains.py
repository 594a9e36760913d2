"""A gallery's own calibration against the model's, on two domains.

The shared MobileFaceNet's threshold is chosen the usual way, once: at a pair false-accept rate of 1e-3 on the
official LFW-gray pairs. Each domain (LFW-gray, ORL) then gets a gallery in Milvus Lite, and `calibrate` chooses
the gallery's threshold for FPIR 1% from the gallery's stored vectors only. Held-out probes judge both thresholds:
unknown probes (people not enrolled) should be rejected, known probes (other photos of enrolled people) found.

    .venv/bin/python bench/calibrate_domains.py [--fpir 0.01] [--out FILE] [--plot docs/img/calibration_domains.png]

Splits: LFW-gray: the people with three or more images, every other one enrolled with their first two images;
known probes: their next four; unknown probes: the first image of every other person (people with one or two
images included). ORL: every other one of the 40 people enrolled with images 1-5; known probes: images 6-10;
unknown probes: all ten images of each other person. Vectors are embedded once (ONNX, flip TTA as in
MODEL.md; for ORL the square (0, 0.1, 1, 0.92) of the 92x112 image) and written straight into the collection:
this measures thresholds, not ingestion.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import CACHE, SHARED, embed_cached, emit, lfw_pair_threshold, onnx_model_dir  # noqa: E402
from indexer.calibration import calibrate  # noqa: E402
from indexer.decision import decide  # noqa: E402
from indexer.ids import face_id  # noqa: E402
from indexer.store import CollectionInfo, FaceIndex, FaceRow, connect  # noqa: E402

LFW = SHARED / "data" / "lfw_gray"
ORL = SHARED / "data" / "orl_att_faces"
ORL_CROP = (0.0, 0.1, 1.0, 0.92)


def lfw_split() -> tuple[list, list, list]:
    files = {p.name: sorted(p.glob("*.jpg")) for p in sorted(LFW.iterdir()) if p.is_dir()}
    three = [n for n, f in files.items() if len(f) >= 3]
    enrolled = set(three[0::2])
    gallery = [(n, f) for n in sorted(enrolled) for f in files[n][:2]]
    known = [(n, f) for n in sorted(enrolled) for f in files[n][2:6]]
    unknown = [(n, f[0]) for n, f in files.items() if n not in enrolled]
    return gallery, known, unknown


def orl_split() -> tuple[list, list, list]:
    people = sorted((p for p in ORL.iterdir() if p.is_dir()), key=lambda p: int(p.name[1:]))
    files = {p.name: [p / f"{i}.pgm" for i in range(1, 11)] for p in people}
    enrolled = [p.name for p in people][0::2]
    gallery = [(n, f) for n in enrolled for f in files[n][:5]]
    known = [(n, f) for n in enrolled for f in files[n][5:]]
    unknown = [(n, f) for n in files if n not in enrolled for f in files[n]]
    return gallery, known, unknown


def judge(index: FaceIndex, vectors: dict[str, np.ndarray], known: list, unknown: list,
          thresholds: dict[str, float]) -> dict:
    """Unknown-probe rejection and known-probe identification at each threshold, searched in Milvus."""
    def best(items):
        hits = index.search(np.stack([vectors[str(f)] for _, f in items]), k=10)
        return [decide(h, threshold=1.0) for h in hits]

    known_d, unknown_d = best(known), best(unknown)
    unknown_scores = np.array([d.score for d in unknown_d])
    right = np.array([d.candidates[0].identity == n for d, (n, _) in zip(known_d, known, strict=True)])
    known_scores = np.array([d.score for d in known_d])
    out = {"rank1": round(float(right.mean()), 4), "unknown_scores": unknown_scores}
    for name, t in thresholds.items():
        out[name] = {"threshold": round(t, 4),
                     "unknown_rejected": round(float((unknown_scores < t).mean()), 4),
                     "fpir": round(float((unknown_scores >= t).mean()), 4),
                     "known_identified": round(float((right & (known_scores >= t)).mean()), 4),
                     "fnir": round(float(1 - (right & (known_scores >= t)).mean()), 4)}
    return out


def plot(results: dict, fpir: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 3.8), sharey=True)
    for ax, (domain, r) in zip(np.atleast_1d(axes), results.items(), strict=True):
        scores = np.sort(r["probes"].pop("unknown_scores"))
        grid = np.linspace(0.0, 1.0, 401)
        ax.plot(grid, [(scores >= t).mean() for t in grid], color="black", label="unknown probes accepted (FPIR)")
        for key, colour, label in (("model", "tab:red", "model's threshold (LFW pairs, FAR 1e-3)"),
                                   ("gallery", "tab:blue", f"gallery's threshold (FPIR {fpir:g})")):
            t = r["probes"][key]["threshold"]
            ax.axvline(t, color=colour, linestyle="--",
                       label=f"{label}: {t:.3f}, FPIR {r['probes'][key]['fpir']:.3f}")
        ax.axhline(fpir, color="grey", linewidth=0.8)
        ax.set_title(f"{domain}: {r['gallery_faces']} faces enrolled, {r['unknown_probes']} unknown probes")
        ax.set_xlabel("cosine threshold")
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 1.05)
        ax.legend(fontsize=7, loc="lower left")
    np.atleast_1d(axes)[0].set_ylabel("share of unknown probes answered as someone")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fpir", type=float, default=0.01)
    parser.add_argument("--pair-far", type=float, default=1e-3, help="the model's calibration on LFW pairs")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where embedded images are kept between runs")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not LFW.is_dir() or not ORL.is_dir():
        raise SystemExit(f"LFW-gray or ORL not found under {SHARED / 'data'}: this benchmark needs ../shared")
    workdir = Path(tempfile.mkdtemp(prefix="arcmatch-calibrate-"))
    lfw_model = onnx_model_dir(workdir, "mobilefacenet.spec.json")
    orl_model = onnx_model_dir(workdir, "mobilefacenet.spec.json", name="mobilefacenet-orl")
    spec_file = orl_model / "spec.json"
    import json

    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**spec, "crop_box": list(ORL_CROP)}))

    lfw_vectors = embed_cached(lfw_model, sorted(LFW.glob("*/*.jpg")), args.cache / "lfw_gray_mobilefacenet.npz")
    orl_vectors = embed_cached(orl_model, sorted(ORL.glob("s*/*.pgm")), args.cache / "orl_mobilefacenet.npz")
    model = lfw_pair_threshold(lfw_vectors, args.pair_far)
    model_threshold = model["threshold"]
    result: dict = {"model_threshold": model, "target_fpir": args.fpir}
    client = connect(str(workdir / "domains.db"))
    for domain, (gallery, known, unknown), vectors in (("LFW-gray", lfw_split(), lfw_vectors),
                                                       ("ORL", orl_split(), orl_vectors)):
        index = FaceIndex(client, domain.replace("-", "_").lower())
        index.ensure(CollectionInfo("mobilefacenet", 128, model_threshold), index_type="FLAT")
        rows = [FaceRow(str(f), n, vectors[str(f)], face_id(str(f))) for n, f in gallery]
        for start in range(0, len(rows), 1000):
            index.upsert(rows[start : start + 1000])
        index.flush()
        own = calibrate(index, args.fpir, model_threshold=model_threshold)
        probes = judge(index, vectors, known, unknown, {"model": model_threshold, "gallery": own.threshold})
        result[domain] = {"gallery_faces": len(gallery), "gallery_identities": own.identities,
                          "known_probes": len(known), "unknown_probes": len(unknown),
                          "calibration": {k: v for k, v in dataclasses.asdict(own).items()
                                          if k not in ("created_at", "method", "model_version")},
                          "probes": probes}
    client.close()
    if args.plot:
        plot({d: result[d] for d in ("LFW-gray", "ORL")}, args.fpir, args.plot)
    for domain in ("LFW-gray", "ORL"):
        result[domain]["probes"].pop("unknown_scores", None)
    emit(result, args.out)


if __name__ == "__main__":
    main()
