"""`arcmatch submit` and `arcmatch jobs`: the same jobs that run locally, on a Ray cluster through the Ray Jobs API.

The project's code travels as the job's runtime environment (its working_dir), and the entrypoint is the same
CLI (`python -m jobs.cli train ...`), so a job on the cluster runs exactly what `arcmatch train ...` runs here.
Paths in the job's arguments are paths on the cluster (a shared volume or an s3:// URI), not on this machine; the
job starts in its copy of the project, so a relative path (with a slash: `./photos`) into a folder here outside
that copy is sent absolute (what a shared volume mounted at the same place needs; without one, no
relative path could be found).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import shlex
import sys
import time
from pathlib import Path

from common.errors import BadInput, NotFound, Unavailable

PROJECT = Path(__file__).resolve().parents[2]
SHIPPED_EXCLUDES = [".venv", ".git", "demo-work", "runs", "*.db", "*.db.lock", "__pycache__", ".pytest_cache",
                    ".ruff_cache", "tests", "docs", "bench", "k8s", "*.egg-info"]
SUBMITTABLE = ("train", "ingest", "reembed", "cluster", "eval", "prepare", "export")
EXIT_BY_STATUS = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}


def has_ray_token() -> bool:
    """Whether a Ray auth token is where Ray looks for one: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names,
    or ~/.ray/auth_token (what `ray start --head` writes when it turns token authentication on)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def refused(address: str, exc) -> Unavailable:
    """Ray's AuthenticationError as one line (its own message runs over several, with a link)."""
    said = " ".join(str(getattr(exc, "message", exc)).split())
    return Unavailable(f"the Ray cluster at {address} refused this client's authentication: copy the head's "
                       f"~/.ray/auth_token here or set RAY_AUTH_TOKEN (Ray said: {said})")


def client(address: str | None):
    import logging

    if not address:
        raise BadInput("no Ray cluster: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    # as Ray's own CLI does: with no RAY_AUTH_MODE said, a token on hand means token authentication (set before
    # Ray reads its configuration, so that its client sends the token)
    if "RAY_AUTH_MODE" not in os.environ and has_ray_token():
        os.environ["RAY_AUTH_MODE"] = "token"
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    logging.getLogger("ray").setLevel(logging.WARNING)  # not a line per packaged file
    # these set INFO themselves ("Uploading package", "WebSocket closed"), or warn that the directories
    # SHIPPED_EXCLUDES leaves out are now left out by default too
    for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                 "ray._private.runtime_env.working_dir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    head_reachable(address)
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise refused(address, exc) from None
    except ValueError as exc:  # not an address at all (requests' InvalidURL is one too)
        raise BadInput(f"{address!r} is no address of a Ray cluster: http://HEAD:8265 (its dashboard), or the "
                       f"head's host:port ({' '.join(str(exc).split())[:200]})") from None
    except Exception as exc:  # noqa: BLE001  (Ray raises ConnectionError, RuntimeError or a gRPC error here)
        raise Unavailable(f"cannot reach the Ray Jobs API at {address}: "
                          f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from exc


def head_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Unavailable at once where `address` is a head's host:port that takes no connection. Why: Ray reads such an
    address as the cluster's GCS and waits 40 s for it, logging a line of its own, before it says it is not
    there; a URL (the dashboard) fails at once by itself, and "auto" is Ray's to find."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise Unavailable(f"cannot reach the Ray Jobs API at {address}: nothing answers there "
                          f"({exc.strerror or type(exc).__name__})") from None


def submit(address: str | None, job: str, args: list[str], *, follow: bool = True, pip: list[str] | None = None,
           env: dict[str, str] | None = None, log=print) -> int:
    """`env`: the submitter's settings (ARCMATCH_* variables, secrets left out by the caller), set for the job's
    driver and workers, so the job runs with the settings the same command would run with here."""
    if job not in SUBMITTABLE:
        raise BadInput(f"`arcmatch submit` takes one of {', '.join(SUBMITTABLE)}, not {job!r}")
    jobs = client(address)
    runtime_env: dict = {"working_dir": str(PROJECT), "excludes": SHIPPED_EXCLUDES}
    if pip:
        runtime_env["pip"] = pip
    if env:
        runtime_env["env_vars"] = dict(env)
    entrypoint = " ".join(["python", "-m", "jobs.cli", job, *map(shlex.quote, on_the_cluster(args))])
    from ray.exceptions import AuthenticationError

    deadline = time.monotonic() + 120
    while True:
        try:
            job_id = jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                     metadata={"arcmatch_job": job, "submitted_by": "arcmatch submit"})
            break
        except AuthenticationError as exc:
            raise refused(address, exc) from None
        except RuntimeError as exc:  # a head that has just started has no job agent for a few seconds
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise Unavailable(f"the cluster refused the job: {exc}") from exc
            time.sleep(2)
    log(f"submitted {job_id}: {entrypoint}" + (f" (with {', '.join(sorted(env))})" if env else ""))
    if not follow:
        return 0
    return wait(jobs, job_id, log=log)


def on_the_cluster(args: list[str], here: Path | None = None) -> list[str]:
    """`args` with every relative path (a value with a slash) whose folder exists here (`here`: the working
    directory) but is not in the job's copy of the project (outside it, or left out by SHIPPED_EXCLUDES) made absolute,
    `--flag=path` too."""
    here = here or Path.cwd()

    def shipped(path: Path) -> bool:
        if not path.is_relative_to(PROJECT):
            return False
        parts = path.relative_to(PROJECT).parts
        return not any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in SHIPPED_EXCLUDES)

    def one(arg: str) -> str:
        flag, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if "/" not in value or "://" in value or value.startswith("-") or Path(value).is_absolute():
            return arg  # a bare word may be a gallery's or a person's name that a file here happens to have
        path = (here / value).resolve()
        if not path.parent.exists() or shipped(path):  # the parent: an output not written yet (a new Lite file)
            return arg
        return f"{flag}{equals}{path}"

    return [one(arg) for arg in args]


def wait(jobs, job_id: str, *, log=print) -> int:
    """Stream the job's logs until it ends; the exit code says how it ended."""
    last: list[str] = []

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()
            last[:] = (last + lines.splitlines())[-200:]

    asyncio.run(tail())
    status = str(jobs.get_job_status(job_id))
    while status not in EXIT_BY_STATUS:  # the log stream can close a moment before the status is final
        time.sleep(0.5)
        status = str(jobs.get_job_status(job_id))
    log(f"job {job_id} {status}")
    hint = status == "FAILED" and wrong_python(last)
    if hint:
        print(f"arcmatch submit: {hint}", file=sys.stderr)
    return EXIT_BY_STATUS[status]


def wrong_python(lines: list[str]) -> str | None:
    """What to do when the job died because the cluster's `python` is not the one arcmatch is installed in (the
    entrypoint runs `python` from the PATH the head was started with), or None; None too where the job's own last
    line already said so (jobs/environment.py)."""
    from jobs.environment import CLUSTER_ADVICE

    for line in reversed(lines):
        if CLUSTER_ADVICE in line:
            return None
        missing = re.search(r"No module named '([^']+)'", line)
        if missing or re.search(r"python: (command )?not found", line):
            what = f"cannot import {missing[1]!r}" if missing else "is not there"
            return f"the cluster's `python` {what}: {CLUSTER_ADVICE}"
    return None


def manage(address: str | None, action: str, job_id: str | None, *, log=print) -> int:
    jobs = client(address)
    if action == "list":
        for info in sorted(jobs.list_jobs(), key=lambda j: j.start_time or 0):
            if info.submission_id:  # submitted jobs; a driver that connected itself has no id to address it by
                log(f"{info.submission_id}\t{info.status}\t{info.entrypoint}")
        return 0
    if job_id is None:
        raise BadInput(f"`arcmatch jobs {action}` needs a job id")
    try:
        if action == "status":
            log(str(jobs.get_job_status(job_id)))
        elif action == "logs":
            sys.stdout.write(jobs.get_job_logs(job_id))
        elif action == "stop":
            log(f"stop requested: {jobs.stop_job(job_id)}")
        else:
            raise BadInput(f"unknown jobs action {action!r}")
    except RuntimeError as exc:  # the Jobs API's answers, all RuntimeError: a 404 for an id it does not know
        if "404" in str(exc) or "does not exist" in str(exc):
            raise NotFound(f"no job {job_id!r} on the cluster at {address}: `arcmatch jobs list` lists them") from None
        raise Unavailable(f"the Ray Jobs API at {address} failed: {' '.join(str(exc).split())[:300]}") from exc
    return 0
