"""`arcmatch serve`, `arcmatch apikey`, `arcmatch audit`: running the search API and the two things its operator
needs beside it. `serve` runs the API in one process (uvicorn) or as Ray Serve replicas with dynamic batching, its
settings from ARCMATCH_* with flags overriding them; `apikey` makes a key for a client; `audit` reads back the trail
the API writes of who enrolled, deleted or searched what. (jobs/service.py is the service the API calls, not this.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile

from common.errors import EXIT_OK, BadInput
from jobs.cli.options import detector_flag, model_flag, ray_flag, settings_from, store_flags
from jobs.settings import OLD_AUDIT_DIR, Settings


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the search API (settings from ARCMATCH_* variables; flags override)")
    model_flag(p, "the gallery's model")
    detector_flag(p)
    store_flags(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                   help="uvicorn's event loop (default %(default)s: uvloop when installed)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes serving the port (a Milvus server only: Lite opens its file from one process)")
    p.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment with dynamic batching")
    p.add_argument("--replicas", type=int, default=1, help="--ray: (minimum) replicas")
    p.add_argument("--max-replicas", type=int, help="--ray: autoscale up to this many replicas")
    p.add_argument("--batch-size", type=int, default=16, help="--ray: dynamic batch size (1 turns batching off)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="--ray: longest wait to fill a batch")
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    ray_flag(p)
    p.set_defaults(run=serve)

    p = sub.add_parser("apikey", help="create an API key: prints the key once, and its ARCMATCH_API_KEYS entry")
    p.add_argument("name")
    p.add_argument("--scopes", default="read",
                   help="comma separated: read, write, admin (create and erase galleries), metrics (Prometheus: "
                        "once a key has it, /metrics answers only such keys) (default %(default)s)")
    p.add_argument("--galleries", default="*",
                   help="comma separated: the galleries the key reaches; `*` for all (default %(default)s)")
    p.set_defaults(run=apikey)

    p = sub.add_parser("audit", help="read the API's audit trail (who enrolled, deleted or searched what)")
    p.add_argument("--dir", help=("the audit directory, or a URI such as s3://bucket/audit (env ARCMATCH_AUDIT_DIR; "
                                   "default: beside the Lite file, arcmatch.db -> arcmatch.audit; for a server "
                                   "./arcmatch-audit)"))
    p.add_argument("--milvus", help="the Lite file whose trail to read (env ARCMATCH_MILVUS_URI; "
                                    "default ./arcmatch.db)")
    p.add_argument("--since", help="from this ISO date or time (UTC unless it says otherwise)")
    p.add_argument("--until", help="up to this ISO date (that whole day) or time")
    p.add_argument("--key", help="only requests made with the API key of this name")
    p.add_argument("--identity", help="only records about this identity")
    p.add_argument("--gallery", help="only records about this gallery (a trail holds every gallery's)")
    p.add_argument("--action", help="enroll, delete_identity, delete_face, merge_identity, move_face, search, "
                                    "calibrate, gallery_create, alias_switch, ... (a name found nowhere lists those "
                                    "the trail holds)")
    p.add_argument("--failed", action="store_true", help="only requests that were refused or failed (status >= 400)")
    p.add_argument("--json", action="store_true", help="JSON lines as stored, instead of a table")
    p.add_argument("--limit", type=int, default=1000, help="the latest N records (default %(default)s)")
    p.set_defaults(run=audit)


def serve(args: argparse.Namespace) -> int:
    settings = settings_from(args).require("model", "api_keys")
    if args.ray:
        if args.workers != 1:
            raise BadInput("--workers is for one machine's processes; under --ray, give --replicas")
        return _serve_ray(args, settings)
    from jobs.api.server import config, run

    if args.workers < 1:
        raise BadInput(f"--workers must be 1 or more, not {args.workers}")
    if args.workers == 1:
        from jobs.api.app import create_app

        app = create_app(settings)
    else:  # each worker builds its app from the environment: these settings go there, flags included
        from indexer.store import is_lite_uri

        if is_lite_uri(settings.milvus_uri):
            raise BadInput("Milvus Lite opens its file from one process only: one worker, or a Milvus server")
        os.environ.update(settings.environment())
        app = "jobs.api.app:app_from_environment"
    with shared_metrics(settings.metrics and args.workers > 1):
        run(config(app, host=args.host, port=args.port, loop=args.loop, log_level="info", workers=args.workers,
                   limit_concurrency=settings.max_connections, log_format=settings.log_format))
    return EXIT_OK


@contextlib.contextmanager
def shared_metrics(needed: bool):
    """A fresh directory the workers count into, so that /metrics answers for all of them (jobs/api/metrics.py),
    removed when serving ends; one the operator set is used as it is."""
    from jobs.api.metrics import SHARED_DIR_VARIABLE as variable  # this process serves nothing: its own metrics
    # are never shared, so importing them before the directory is set changes nothing

    if not needed or os.environ.get(variable):
        yield
        return
    made = tempfile.mkdtemp(prefix="arcmatch-metrics-")
    os.environ[variable] = made
    try:
        yield
    finally:
        os.environ.pop(variable, None)
        shutil.rmtree(made, ignore_errors=True)


def _serve_ray(args: argparse.Namespace, settings: Settings) -> int:
    from ray import serve

    from indexer.store import is_lite_uri
    from jobs.api.proxy import PROXY_ENV
    from jobs.api.serve import build_application
    from jobs.runtime import init_ray

    max_replicas = args.max_replicas or args.replicas
    if is_lite_uri(settings.milvus_uri) and max_replicas > 1:
        raise BadInput("Milvus Lite opens its file from one process only: use one replica, or a Milvus server")
    for name, value in PROXY_ENV.items():  # the proxies of a cluster started here read it (jobs/api/proxy.py)
        os.environ.setdefault(name, value)
    init_ray(settings.ray_address, quiet=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    application = build_application(settings, min_replicas=args.replicas, max_replicas=max_replicas,
                                    max_batch_size=args.batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1000,
                                    num_gpus=args.gpus_per_replica)
    with _stopped_by_sigterm():
        serve.run(application, name="arcmatch", route_prefix="/", blocking=True)
    return EXIT_OK


@contextlib.contextmanager
def _stopped_by_sigterm():
    """SIGTERM (Kubernetes, systemd, `kill`) ends serving as Ctrl-C does: the application and Ray stop, and one
    line says so. Ray's own handler, installed when it starts, printed a C++ stack dump for it instead."""
    import signal

    import ray
    from ray import serve

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt:
        print("arcmatch serve: stopping", file=sys.stderr)
        serve.shutdown()
        ray.shutdown()
    finally:
        signal.signal(signal.SIGTERM, previous)


def apikey(args: argparse.Namespace) -> int:
    from jobs.api.keys import new_key

    def listed(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    key, entry = new_key(args.name, listed(args.scopes), listed(args.galleries))
    print(f"key (shown once, give it to the client): {key}")
    print(f"add to ARCMATCH_API_KEYS (comma separated): {entry}")
    return EXIT_OK


def _who(record: dict) -> str:
    """The identities a record is about, as the table shows them: both of a pair said to be different people, and
    where a merge or a move took faces from and to (with the first alone, a `distinct` read as about one person)."""
    who = record.get("identity") or "-"
    if record.get("other"):
        who = f"{who} / {record['other']}"
    if record.get("merged_from"):
        who = f"{record['merged_from']} -> {who}"
    if record.get("moved_to"):
        who = f"{who} -> {record['moved_to']}"
    return who


def audit(args: argparse.Namespace) -> int:
    import json
    from collections import deque

    from jobs.audit import read

    if args.limit < 1:
        raise BadInput(f"--limit is the number of latest records shown, at least 1, got {args.limit}")
    directory = args.dir or settings_from(args).audit_root()
    records = deque(read(directory, since=args.since, until=args.until, key=args.key, identity=args.identity,
                         action=args.action, failed=True if args.failed else None, gallery=args.gallery),
                    maxlen=args.limit)
    for record in records:
        if args.json:
            print(json.dumps(record, ensure_ascii=False))
            continue
        faces = record.get("face_ids") or [m["identity"] for m in record.get("matches") or [] if m]
        print(f"{record.get('time', '')[:23]}  {record.get('status', ''):>3}  {record.get('key') or '-':<12}  "
              f"{record.get('gallery') or '-':<12}  {record.get('action') or record.get('method', ''):<16}  "
              f"{_who(record):<24}  {','.join(map(str, faces))[:60]}")
    if not args.json:
        print(f"{len(records)} record(s) in {directory}")
    if args.action and not records:  # a misspelt action finds nothing, which reads as "nothing happened"
        kept = sorted({r["action"] for r in read(directory, since=args.since, until=args.until) if r.get("action")})
        if args.action not in kept:
            print(f"no record has the action {args.action!r}; those in this trail: {', '.join(kept) or 'none'}",
                  file=sys.stderr)
    if not args.dir and directory != OLD_AUDIT_DIR and os.path.isdir(OLD_AUDIT_DIR):
        print(f"older records may be in {OLD_AUDIT_DIR} (the default before a Lite file kept its trail beside it): "
              f"arcmatch audit --dir {OLD_AUDIT_DIR}", file=sys.stderr)
    return EXIT_OK
