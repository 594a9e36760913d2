"""Training on real faces: ArcFace vs softmax vs Eigenfaces on LFW-gray, no outside data.

Protocol (unrestricted, labelled outside data not used): train on every image of the people who appear in folds
2-10 of the official View 2 pairs (people of different folds are disjoint), test on fold 1's 600 pairs. The same
backbone, input, epochs, batch and optimizer serve both heads, through `trainer.ray_loop.fit` (Ray Train, one CPU
worker), so the only difference is the head. Eigenfaces (PCA on the same pixel crops, whitened, cosine) is the
floor a learned model has to clear.

Fold 1 has a single fold's 600 pairs, so the accuracy is the mean over 10 random sub-folds of them, each with the
threshold chosen on the other nine (the LFW rule applied inside the fold), plus ROC AUC.

    .venv/bin/python bench/lfw_train.py [--epochs 14] [--heads arcface,softmax] [--out result.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import emit  # bench/harness.py, beside this script
from sklearn.decomposition import PCA

from embedder.embed import TorchEmbedder
from embedder.evaluation import kfold_accuracy, pair_scores
from embedder.pairs import read_pairs
from embedder.preprocess import decode_image
from embedder.sources import LabelledImage, decode_items, write_manifest
from embedder.spec import ModelSpec
from jobs.runtime import init_ray
from trainer.config import TrainConfig
from trainer.ray_loop import fit

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw_gray"
PAIRS = ROOT.parent / "shared" / "data" / "lfw_pairs.txt"
# the face region of the 250 px aligned LFW images, as ../shared/models/mobilefacenet/MODEL.md crops it
CROP = (55 / 250, 45 / 250, 195 / 250, 185 / 250)


def split_people() -> tuple[list[LabelledImage], np.ndarray, np.ndarray, list[str]]:
    """Training images (people of folds 2-10) and fold 1's pairs as (pair index, same, image paths)."""
    pairs = read_pairs(PAIRS, LFW)
    test = pairs.fold == 0
    names = {Path(p).parent.name for p in (*pairs.left, *pairs.right)}
    test_names = {Path(p).parent.name for i, p in enumerate(pairs.left) if test[i]}
    test_names |= {Path(p).parent.name for i, p in enumerate(pairs.right) if test[i]}
    train_names = sorted(names - test_names)
    train = [LabelledImage(str(f), name) for name in train_names for f in sorted((LFW / name).glob("*.jpg"))]
    left = [p for p, t in zip(pairs.left, test, strict=True) if t]
    right = [p for p, t in zip(pairs.right, test, strict=True) if t]
    paths = sorted(set(left) | set(right))
    row = {p: i for i, p in enumerate(paths)}
    index = np.array([[row[a], row[b]] for a, b in zip(left, right, strict=True)])
    return train, index, pairs.same[test], paths


def verify(vectors: np.ndarray, index: np.ndarray, same: np.ndarray, seed: int) -> dict:
    scores = pair_scores(vectors, index)
    folds = np.random.default_rng(seed).permutation(len(scores)) % 10
    result = kfold_accuracy(scores, same, folds)
    return {"accuracy": round(100 * result.accuracy_mean, 2), "std": round(100 * result.accuracy_std, 2),
            "auc": round(result.auc, 4)}


def eigenfaces(train: list[LabelledImage], test_images: np.ndarray, spec: ModelSpec, components: int) -> np.ndarray:
    pixels = decode_items(train, spec).images[..., 0].reshape(len(train), -1).astype(np.float32) / 255
    pca = PCA(n_components=components, whiten=True, random_state=0).fit(pixels)
    projected = pca.transform(test_images[..., 0].reshape(len(test_images), -1).astype(np.float32) / 255)
    return projected / np.linalg.norm(projected, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--embedding-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--scale", type=float, default=32.0, help="ArcFace logit scale s")
    parser.add_argument("--margin", type=float, default=0.5, help="ArcFace additive angular margin m2, radians")
    parser.add_argument("--heads", default="arcface,softmax")
    parser.add_argument("--components", type=int, default=150, help="Eigenfaces: PCA components")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not LFW.is_dir() or not PAIRS.is_file():
        raise SystemExit(f"needs {LFW} and {PAIRS} (see ../shared/data/SOURCES.md)")

    train, index, same, test_paths = split_people()
    spec = ModelSpec(args.backbone, embedding_size=args.embedding_size, input_size=(args.input_size,) * 2,
                     crop_box=CROP)
    test_images = np.stack([decode_image(Path(p).read_bytes(), spec) for p in test_paths])
    result: dict = {
        "train_images": len(train), "train_identities": len({t.identity for t in train}),
        "test_pairs": len(same), "backbone": args.backbone, "input_size": args.input_size,
        "embedding_size": args.embedding_size, "epochs": args.epochs, "batch_size": args.batch_size,
        "optimizer": args.optimizer, "lr": args.lr, "scale": args.scale, "margin": args.margin, "cpus": args.cpus,
        "heads": {},
    }
    started = time.perf_counter()
    result["eigenfaces"] = verify(eigenfaces(train, test_images, spec, args.components), index, same, 0)
    result["eigenfaces"] |= {"components": args.components, "seconds": round(time.perf_counter() - started, 1)}
    print("eigenfaces", result["eigenfaces"], flush=True)

    init_ray(None)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "train.csv"
        write_manifest(manifest, train)
        for head in args.heads.split(","):
            config = TrainConfig(
                data=str(manifest), spec=spec, head=head, scale=args.scale,
                margins={"m2": args.margin} if head == "arcface" else {}, epochs=args.epochs,
                batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, cpus_per_worker=args.cpus,
                log_every=50,
            )
            trained = fit(config, Path(tmp) / head, storage=Path(tmp) / "runs", name=f"lfw-{head}")
            vectors = TorchEmbedder.from_checkpoint(Path(tmp) / head).embed(test_images)
            result["heads"][head] = verify(vectors, index, same, 0) | {
                "train_seconds": round(trained.seconds, 1),
                "images_per_s": round(float(np.median([h["images_per_s"] for h in trained.history])), 1),
                "final_loss": round(trained.history[-1]["loss"], 3),
                "final_train_accuracy": round(trained.history[-1]["accuracy"], 3),
            }
            print(head, result["heads"][head], flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
