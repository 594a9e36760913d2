"""`arcmatch prepare`: data made ready for `arcmatch train`. A tree or manifest of labelled photos is packed into
Parquet shards (image bytes, label, identity, path), so a run reads a few large files instead of a tree of small ones,
optionally as faces detected and aligned the way a model trained on them will align photos later, with a CSV of the
files that could not be read; or a synthetic identity/image tree is drawn, for trying the path without a data set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import EXIT_OK, EXIT_PARTIAL, BadInput, Conflict
from common.names import shown
from jobs.cli.options import default_report, detector_flag, positive, settings_from, writable
from jobs.pipelines.report import write_error_report


def register(sub) -> None:
    p = sub.add_parser("prepare", help="Parquet training shards from a tree or manifest, or synthetic faces")
    p.add_argument("--source", help="identity/image tree or manifest (CSV/Parquet: path, identity) to pack")
    p.add_argument("--parquet", metavar="OUT", help="write Parquet shards (image bytes, label, identity, path) to OUT")
    p.add_argument("--rows-per-shard", type=positive, default=5000)
    p.add_argument("--errors", default=default_report("prepare_errors.csv"), type=writable(),
                   help="CSV report of files that could not be read (default: %(default)s)")
    p.add_argument("--synthetic", metavar="OUT", help="draw a synthetic identity/image tree into OUT")
    p.add_argument("--identities", type=positive, default=100)
    p.add_argument("--images", type=positive, default=10, help="images per identity")
    p.add_argument("--size", type=positive, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--align", action="store_true",
                   help="--parquet: store each photo's face detected and aligned to the five-point template "
                        "(needs --detector); a model trained on them aligns photos the same way")
    p.add_argument("--align-size", type=positive, default=112, help="side of the aligned faces (default %(default)s)")
    detector_flag(p)
    p.set_defaults(run=prepare)


def prepare(args: argparse.Namespace) -> int:
    if args.synthetic and (args.parquet or args.source):  # one of them would be ignored without a word
        raise BadInput("--synthetic OUT draws a data set; --source TREE --parquet OUT packs one: give one of them")
    if args.parquet:
        return _prepare_parquet(args)
    if not args.synthetic:
        raise BadInput("prepare needs --synthetic OUT, or --source TREE --parquet OUT")
    from trainer.synthetic import write_dataset

    out = Path(args.synthetic)
    if out.exists() and any(out.iterdir()):  # as --parquet refuses: a drawn set mixed into another's folders
        raise Conflict(f"{out} is not empty: draw into a new folder (its people would mix with what is there)")
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
    if summary.emptied:
        print(f"{len(summary.emptied)} identit{'y' if len(summary.emptied) == 1 else 'ies'} left out, none of their "
              f"files kept: {', '.join(shown(n) for n in summary.emptied[:5])}"
              + (" ..." if len(summary.emptied) > 5 else ""))
    return EXIT_PARTIAL if summary.skipped else EXIT_OK
