"""Flags that several commands share, the one way a command turns its flags into Settings, and what the
administrative commands open with them (the gallery, the audit trail).

Flags that mirror a setting default to None ("not given"), so the value comes from ARCMATCH_* (or its default in
jobs/settings.py) unless the flag is given: the CLI and the API then agree on every default.
"""

from __future__ import annotations

import argparse
import getpass
import os
import tempfile
from pathlib import Path

from common.errors import BadInput
from jobs.settings import Settings


def cosine(text: str) -> float:
    """argparse type of a --threshold: a cosine similarity, refused at once beyond [-1, 1] (indexer.ids)."""
    from indexer.errors import InvalidValue
    from indexer.ids import validate_threshold

    try:
        return validate_threshold(float(text))
    except (ValueError, InvalidValue) as exc:
        raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, InvalidValue)
                                         else f"not a number: {text!r}") from None


def share(text: str) -> float:
    """argparse type of a rate (--fpir, --far): a share strictly between 0 and 1, refused before any work starts
    (a demo would otherwise train for minutes first)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"a rate is a share between 0 and 1 (both excluded), got {text}")
    return value


def positive(text: str) -> int:
    """argparse type of a count or a size: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


PICTURES = (".png", ".svg", ".pdf")  # what a --plot or --roc may be written as (matplotlib, by the suffix)


def writable(*suffixes: str):
    """argparse type of a file a command writes (a report, a picture, an export): refused at once where it could
    not be written (a folder that does not exist, or that this user cannot write in; a suffix the writer does not
    know), not after the job's work is done. Paths of a submitted job are checked where the job runs; a URI
    (s3://...) is left to the filesystem that writes it."""

    def check(text: str) -> str:
        if "://" in text:
            return text
        path = Path(text)
        folder = path.parent
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder: name a file in it")
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: write it as {', '.join(suffixes)}")
        if not folder.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text}: this user cannot write in {folder}")
        existed = path.exists()
        try:  # where the folder's permissions do not tell (/proc, a read-only mount), trying does
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"{text}: cannot be written ({exc.strerror or exc})") from None
        if not existed:
            path.unlink(missing_ok=True)
        return text

    return check


def default_report(name: str) -> Path:
    """Where a command's report goes when no path is given: `name` in the working folder, or in the temp folder
    where this user cannot write here (a read-only checkout). A Path, not a string, so that argparse does not
    check it as if given: a default no one asked for must not refuse a run that skips nothing."""
    return Path(name) if os.access(".", os.W_OK) else Path(tempfile.gettempdir()) / name


def model_flag(p: argparse.ArgumentParser, what: str = "model directory") -> None:
    p.add_argument("--model", help=f"{what}: an arcmatch checkpoint or an ONNX model directory (env ARCMATCH_MODEL)")


def store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--milvus", help="Milvus Lite file or server URI (env ARCMATCH_MILVUS_URI; default ./arcmatch.db)")
    p.add_argument("--gallery", "--collection", dest="gallery",
                   help="gallery name (env ARCMATCH_GALLERY; default faces)")


def search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=positive, help="faces retrieved per probe (env ARCMATCH_SEARCH_K; default 20)")
    p.add_argument("--ef", type=positive, help="HNSW search list size: higher is closer to exact search, and "
                                               "slower (env ARCMATCH_SEARCH_EF; default 192)")


def detector_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", help="YuNet .onnx face detector for raw photos (env ARCMATCH_DETECTOR; needed by "
                                      "models that want aligned faces)")


def ray_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster address (env RAY_ADDRESS; default: a local Ray)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by whichever of these flags the command has and was given."""
    flags = {"model": "model", "milvus": "milvus_uri", "gallery": "gallery", "k": "search_k",
             "ef": "search_ef", "address": "ray_address", "detector": "detector"}
    return Settings.load(**{setting: getattr(args, flag, None) for flag, setting in flags.items()})


def archive_root(settings: Settings, needed_for: str) -> str:
    """Where the face archive is; BadInput saying what needs it when it is off."""
    root = settings.archive_root()
    if root is None:
        raise BadInput(f"the face archive is off (ARCMATCH_ARCHIVE=false): {needed_for}")
    return root


def left_out(skipped: list[dict]) -> str:
    """The faces a naming or a merge left where they were, one line each under its summary (jobs.curation.Named)."""
    return "".join(f"\n  left: face {s['face_id']}: {s['reason']}" for s in skipped)


def audit(settings: Settings, action: str, **details) -> None:
    """One record in the audit trail (jobs/audit.py), as the API writes for its changes; the key is the login."""
    from jobs.audit import AuditLog

    log = AuditLog(settings.audit_root(), retention_days=settings.audit_retention_days)
    log.append({"key": f"cli:{getpass.getuser()}", "gallery": settings.gallery, "method": "CLI",
                "path": f"arcmatch {action}", "action": action, "status": 200, **details})
    log.close()


def job_console(settings: Settings, job: str):
    """The terminal of a long job, feeding its Prometheus metrics when the settings ask for them (a port to serve
    them on, a Pushgateway to push them to); use as `with job_console(...) as console:`."""
    from jobs.progress import Console

    metrics = None
    if settings.job_metrics_port or settings.pushgateway:
        from jobs.job_metrics import JobMetrics

        metrics = JobMetrics(job, gallery=settings.gallery, port=settings.job_metrics_port,
                             pushgateway=settings.pushgateway)
    return Console(metrics=metrics).job()


def open_gallery(settings: Settings):
    """The gallery the settings name (indexer.galleries.Galleries: its alias and collections)."""
    from indexer.galleries import Galleries
    from indexer.store import connect

    return Galleries(connect(settings.milvus_uri, settings.token()), settings.gallery)
