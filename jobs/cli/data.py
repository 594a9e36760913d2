"""`arcmatch prepare`, `eval` and `export`: data sets in, accuracy and a threshold out, a model out as ONNX."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common.errors import EXIT_OK, EXIT_PARTIAL, BadInput
from jobs.cli.options import detector_flag, model_flag, settings_from
from jobs.pipelines.report import write_error_report


def register(sub) -> None:
    p = sub.add_parser("prepare", help="Parquet training shards from a tree or manifest, or synthetic faces")
    p.add_argument("--source", help="identity/image tree or manifest (CSV/Parquet: path, identity) to pack")
    p.add_argument("--parquet", metavar="OUT", help="write Parquet shards (image bytes, label, identity, path) to OUT")
    p.add_argument("--rows-per-shard", type=int, default=5000)
    p.add_argument("--errors", default="prepare_errors.csv", help="CSV report of files that could not be read")
    p.add_argument("--synthetic", metavar="OUT", help="draw a synthetic identity/image tree into OUT")
    p.add_argument("--identities", type=int, default=100)
    p.add_argument("--images", type=int, default=10, help="images per identity")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--align", action="store_true",
                   help="--parquet: store each photo's face detected and aligned to the five-point template "
                        "(needs --detector); a model trained on them aligns photos the same way")
    p.add_argument("--align-size", type=int, default=112, help="side of the aligned faces (default %(default)s)")
    detector_flag(p)
    p.set_defaults(run=prepare)

    p = sub.add_parser("eval", help="verification accuracy and threshold calibration on held-out identities")
    model_flag(p, "the model to evaluate")
    p.add_argument("--data", required=True, help="identity/image tree or manifest of held-out identities")
    p.add_argument("--pairs", help="an LFW-style pairs file over --data (10 folds); default: sampled pairs")
    p.add_argument("--flip-tta", action="store_true", help="embed each image with its mirror image")
    p.add_argument("--roc", help="write the ROC curve to this PNG")
    p.add_argument("--far", type=float, default=1e-3, help="target false accept rate (default %(default)g)")
    p.add_argument("--fpir", type=float,
                   help="instead of --far: the threshold that lets this share of strangers match someone in galleries "
                        "shaped like --gallery, made from the held-out identities (which must outnumber its people)")
    p.add_argument("--gallery", type=gallery_shape, default=None, metavar="PEOPLE[xPHOTOS]",
                   help="with --fpir: the planned gallery, e.g. 50x3 (photos default to 1); once a gallery exists, "
                        "`arcmatch calibrate` measures its own")
    p.add_argument("--calibrate", action="store_true", help="store the threshold in the checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--align", action="store_true",
                   help="the images are raw photos: detect and align each face (needs --detector); automatic for "
                        "a model that wants aligned faces")
    detector_flag(p)
    p.set_defaults(run=evaluate)

    p = sub.add_parser("export", help="export a checkpoint as ONNX (with its spec and calibration)")
    model_flag(p, "the arcmatch checkpoint to export")
    p.add_argument("--onnx", required=True, metavar="DIR", help="output directory for model.onnx and spec.json")
    p.set_defaults(run=export)


def prepare(args: argparse.Namespace) -> int:
    if args.parquet:
        return _prepare_parquet(args)
    if not args.synthetic:
        raise BadInput("prepare needs --synthetic OUT, or --source TREE --parquet OUT")
    from trainer.synthetic import write_dataset

    paths = write_dataset(args.synthetic, range(args.identities), args.images, seed=args.seed, size=args.size)
    print(f"wrote {len(paths)} images of {args.identities} identities to {args.synthetic}")
    return EXIT_OK


def _prepare_parquet(args: argparse.Namespace) -> int:
    from embedder.sources import list_images
    from trainer.shards import write_shards

    if not args.source:
        raise BadInput("prepare --parquet needs --source (an identity/image tree or a manifest)")
    policy = None
    if args.align:  # labelled photos of one person each: the largest face is theirs; no gate on training data
        policy = settings_from(args).require("detector").face_policy("largest", gate=False)
    summary = write_shards(list_images(args.source), args.parquet, args.rows_per_shard, policy=policy,
                           aligned_size=(args.align_size, args.align_size))
    print(f"wrote {summary.rows} images of {summary.classes} identities in {summary.shards} shard(s) to {args.parquet}")
    if summary.skipped:
        write_error_report(args.errors, summary.skipped)
        print(f"{len(summary.skipped)} file(s) skipped; see {args.errors}")
        return EXIT_PARTIAL
    return EXIT_OK


def evaluate(args: argparse.Namespace) -> int:
    from embedder.embed import open_embedder
    from embedder.evaluation import calibrate, evaluate_pairs
    from embedder.sources import list_images

    settings = settings_from(args)
    model = settings.require("model").model
    embedder = open_embedder(model)
    embedder.flip_tta = args.flip_tta
    policy = None
    if args.align or embedder.spec.alignment != "none":
        embedder.spec = replace(embedder.spec, alignment="five_point", crop_box=None)
        policy = settings.require("detector").face_policy("largest", gate=False)
    if (args.fpir is None) != (args.gallery is None):
        raise BadInput("--fpir and --gallery go together: the rate, and the gallery it is for")
    if args.fpir is not None and args.pairs:
        raise BadInput("--fpir makes its own galleries from the held-out identities; it takes no --pairs file")
    if args.pairs:
        verification, calibration, scores = evaluate_pairs(embedder, args.pairs, args.data, args.far, policy)
    elif args.fpir is not None:
        verification, calibration, scores = _fpir(embedder, args, policy)
    else:
        verification, calibration, scores = calibrate(embedder, list_images(args.data), args.far, args.seed, policy)
    print(f"verification: {100 * verification.accuracy_mean:.2f}% +- {100 * verification.accuracy_std:.2f} "
          f"({verification.folds}-fold), ROC AUC {verification.auc:.4f}")
    for far, tar in verification.tar_at_far.items():
        print(f"TAR {tar:.4f} at FAR {far:g}")
    target = (f"for FPIR {args.fpir:g} in galleries of {args.gallery[0]}x{args.gallery[1]}, {calibration.trials} "
              f"trials" if args.fpir is not None else f"target {calibration.target_far:g}")
    print(f"threshold {calibration.threshold:.4f} at FAR {calibration.measured_far:.5f} "
          f"({target}), TAR {calibration.tar:.3f}, {calibration.pairs} pairs")
    if args.roc:
        from embedder.evaluation import plot_roc

        print(f"ROC curve in {plot_roc(*scores, args.roc, title=f'arcmatch eval: {Path(model).name}')}")
    if args.calibrate:
        calibration.save(model)
        print(f"stored the threshold in {model}")
    return EXIT_OK


def gallery_shape(text: str) -> tuple[int, int]:
    """"50x3" -> (50, 3) people and photos each; "50" -> (50, 1)."""
    people, _, photos = text.lower().partition("x")
    try:
        shape = int(people), int(photos or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a gallery is PEOPLE or PEOPLExPHOTOS, e.g. 50x3; got {text!r}") from None
    if min(shape) < 1:
        raise argparse.ArgumentTypeError(f"a gallery needs at least one person and one photo each; got {text!r}")
    return shape


def _fpir(embedder, args: argparse.Namespace, policy):
    import numpy as np

    from embedder.sources import decode_items, list_images
    from jobs.thresholds import fpir_threshold

    data = decode_items(list_images(args.data), embedder.spec, policy=policy)
    people, photos = args.gallery
    chosen = fpir_threshold(embedder.embed(data.images), np.asarray(data.labels), args.fpir,
                            gallery_identities=people, photos=photos, seed=args.seed)
    print(f"rank-1 in those galleries at the threshold: {chosen.rank1:.3f}")
    return chosen.verification, chosen.calibration, chosen.scores


def export(args: argparse.Namespace) -> int:
    import numpy as np

    from embedder.checkpoint import load_embedder
    from embedder.export import export_onnx
    from embedder.onnx import OnnxEmbedder
    from embedder.torch_embedder import TorchEmbedder

    source = settings_from(args).require("model").model
    model = load_embedder(source)
    path = export_onnx(model, args.onnx, calibration_from=source)
    images = np.random.default_rng(0).integers(0, 256, size=(8, *model.spec.input_size, 3), dtype=np.uint8)
    diff = np.abs(OnnxEmbedder.from_path(args.onnx).embed(images) - TorchEmbedder(model).embed(images)).max()
    print(f"wrote {path} (max abs difference from torch on 8 random images: {diff:.2e})")
    return EXIT_OK
