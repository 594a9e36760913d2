"""`arcmatch submit` and `arcmatch jobs`: the local commands run as jobs on a Ray cluster (Ray Jobs API), each
exactly as `arcmatch COMMAND ...` runs here, with the environment carried over except its secrets; `jobs` lists,
inspects, reads the logs of or stops them.
"""

from __future__ import annotations

import argparse
import os
import sys

from common.errors import BadInput
from jobs.cli.options import settings_from
from jobs.pipelines.submit import SUBMITTABLE


def register(sub) -> None:
    p = sub.add_parser("submit", help="run train/ingest/reembed/cluster/eval/prepare/export on a Ray cluster (Ray Jobs "
                                      "API)")
    p.add_argument("job", choices=SUBMITTABLE)
    p.add_argument("args", nargs=argparse.REMAINDER, help="the job's own arguments, as for the local command")
    p.add_argument("--address", help="Ray Jobs API address, http://HEAD:8265 (env RAY_ADDRESS)")
    p.add_argument("--no-follow", action="store_true", help="print the job id and return without waiting")
    p.set_defaults(run=submit)

    p = sub.add_parser("jobs", help="list, inspect, read the logs of, or stop jobs on a Ray cluster")
    p.add_argument("action", choices=["list", "status", "logs", "stop"])
    p.add_argument("job_id", nargs="?")
    p.add_argument("--address", help="Ray Jobs API address (env RAY_ADDRESS)")
    p.set_defaults(run=manage)


def own_flags(args: argparse.Namespace) -> argparse.Namespace:
    """submit's own --address and --no-follow, wherever they were written: after the job's name argparse hands
    everything to the job, and a job run on the cluster has no use for an address of its own (it would have sent
    `arcmatch submit ingest photos --address http://head:8265` to the Ray of this machine)."""
    rest, words = [], iter(args.args)
    for word in words:
        if word == "--address":
            args.address = next(words, None)
            if args.address is None:
                raise BadInput("--address needs the Ray Jobs API address, http://HEAD:8265")
        elif word.startswith("--address="):
            args.address = word.split("=", 1)[1]
        elif word == "--no-follow":
            args.no_follow = True
        else:
            rest.append(word)
    args.args = rest
    return args


def submit(args: argparse.Namespace) -> int:
    from jobs.pipelines.submit import submit as submit_job
    from jobs.settings import carried_environment

    args = own_flags(args)

    carried, withheld = carried_environment(dict(os.environ))
    if withheld:
        print(f"not carried to the cluster (secrets: set them there): {', '.join(withheld)}", file=sys.stderr)
    return submit_job(settings_from(args).ray_address, args.job, args.args, follow=not args.no_follow, env=carried)


def manage(args: argparse.Namespace) -> int:
    from jobs.pipelines.submit import manage as manage_jobs

    return manage_jobs(settings_from(args).ray_address, args.action, args.job_id)
