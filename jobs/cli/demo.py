"""`arcmatch demo`: the whole path on the embedded defaults (local Ray, Milvus Lite), with a short report."""

from __future__ import annotations

import argparse

from common.errors import EXIT_OK
from jobs.cli.options import share
from jobs.progress import Console


def register(sub) -> None:
    p = sub.add_parser("demo", help="end to end on the embedded defaults: data, training, gallery, lookups")
    p.add_argument("--data", help="a real identity/image tree instead of synthetic faces")
    p.add_argument("--workdir", default="./demo-work")
    p.add_argument("--size", default="default", choices=["default", "tiny"])
    p.add_argument("--far", type=share, help="pair false accept rate for the threshold (default: from --fpir)")
    p.add_argument("--fpir", type=share, default=0.02,
                   help="target rate of unknown probes accepted, measured on galleries of the demo's shape "
                        "made from the calibration identities (default %(default)g)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=demo)


def demo(args: argparse.Namespace) -> int:
    from jobs.pipelines.demo import SIZES, run_demo
    from jobs.runtime import init_ray

    init_ray()
    report = run_demo(args.workdir, data=args.data, size=SIZES[args.size], target_far=args.far,
                      target_fpir=args.fpir, seed=args.seed, console=Console())
    print("\n".join(report.lines()))
    return EXIT_OK
