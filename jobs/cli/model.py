"""`arcmatch eval` and `arcmatch export`: what a trained model is worth, and the model as it ships. `eval` measures
verification accuracy on held-out identities and chooses a threshold, for a false accept rate between pairs or for a
false-positive identification rate in galleries of a planned shape, and can store it in the checkpoint; `export`
writes the checkpoint as ONNX with its spec and that calibration, and compares the ONNX model's embeddings with torch's.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from common.errors import EXIT_OK, BadInput
from jobs.cli.options import PICTURES, detector_flag, model_flag, settings_from, share, writable


def register(sub) -> None:
    p = sub.add_parser("eval", help="verification accuracy and threshold calibration on held-out identities")
    model_flag(p, "the model to evaluate")
    p.add_argument("--data", required=True, help="identity/image tree or manifest of held-out identities")
    p.add_argument("--pairs", help="an LFW-style pairs file over --data (10 folds); default: sampled pairs")
    p.add_argument("--flip-tta", action="store_true", help="embed each image with its mirror image")
    p.add_argument("--roc", type=writable(*PICTURES), help="write the ROC curve to this picture (.png, .svg, .pdf)")
    p.add_argument("--far", type=share, default=1e-3, help="target false accept rate (default %(default)g)")
    p.add_argument("--fpir", type=share,
                   help="instead of --far: the threshold that lets this share of strangers match someone in galleries "
                        "shaped like --gallery-shape, made from the held-out identities (which must outnumber its "
                        "people)")
    # --gallery elsewhere names a gallery (jobs/cli/options.py); here the older spelling of --gallery-shape stays
    p.add_argument("--gallery-shape", "--gallery", dest="planned_gallery", type=gallery_shape, default=None,
                   metavar="PEOPLE[xPHOTOS]",
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


def evaluate(args: argparse.Namespace) -> int:
    from embedder.embed import open_embedder
    from embedder.evaluation import calibrate, evaluate_pairs
    from embedder.sources import list_images
    from jobs.thresholds import with_reference

    settings = settings_from(args)
    model = settings.require("model").model
    embedder = open_embedder(model)
    embedder.flip_tta = args.flip_tta
    policy = None
    if args.align or embedder.spec.alignment != "none":
        embedder.spec = replace(embedder.spec, alignment="five_point", crop_box=None)
        policy = settings.require("detector").face_policy("largest", gate=False)
    if (args.fpir is None) != (args.planned_gallery is None):
        raise BadInput("--fpir and --gallery-shape go together: the rate, and the gallery it is for")
    if args.fpir is not None and args.pairs:
        raise BadInput("--fpir makes its own galleries from the held-out identities; it takes no --pairs file")
    if args.pairs:
        verification, calibration, scores, held = evaluate_pairs(embedder, args.pairs, args.data, args.far, policy)
    elif args.fpir is not None:
        verification, calibration, scores, held = _fpir(embedder, args, policy)
    else:
        verification, calibration, scores, held = calibrate(embedder, list_images(args.data), args.far, args.seed,
                                                            policy)
    calibration, reference = with_reference(calibration, *held, seed=args.seed)
    print(f"verification: {100 * verification.accuracy_mean:.2f}% +- {100 * verification.accuracy_std:.2f} "
          f"({verification.folds}-fold), ROC AUC {verification.auc:.4f}")
    for far, tar in verification.tar_at_far.items():
        print(f"TAR {tar:.4f} at FAR {far:g}")
    target = (f"for FPIR {args.fpir:g} in galleries of {'x'.join(map(str, args.planned_gallery))}, "
              f"{calibration.trials} trials" if args.fpir is not None else f"target {calibration.target_far:g}")
    print(f"threshold {calibration.threshold:.4f} at FAR {calibration.measured_far:.5f} "
          f"({target}), TAR {calibration.tar:.3f}, {calibration.pairs} pairs")
    if args.roc:
        from embedder.evaluation import plot_roc

        print(f"ROC curve in {plot_roc(*scores, args.roc, title=f'arcmatch eval: {Path(model).name}')}")
    if args.calibrate:  # what is kept with the threshold: said where something is kept
        print(reference)
        calibration.save(model)
        print(f"stored the threshold{' and the tail reference' if calibration.tail_reference else ''} in {model}")
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
    people, photos = args.planned_gallery
    chosen = fpir_threshold(embedder.embed(data.images), np.asarray(data.labels), args.fpir,
                            gallery_identities=people, photos=photos, seed=args.seed)
    print(f"rank-1 in those galleries at the threshold: {chosen.rank1:.3f}")
    return chosen.verification, chosen.calibration, chosen.scores, chosen.held_out


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
