"""Enrolling many photos through the API: from a folder (one sub-folder per person, named after them) or a CSV
manifest (columns `identity` and `path`, paths relative to the manifest), one photo per request, several at once,
with a progress bar.

One photo per request, so a photo the service refuses (no face, two faces, a corrupt file, a face of someone
else) fails alone and is reported with the reason, while the rest go in. Enrolling is idempotent (a photo's face
id derives from the identity and the photo), so the same batch run again after a crash or a partial failure adds
nothing twice and fills in what was missing.

An answer that is about the batch, not the photo (a key the service does not know or that lacks the scope, a
gallery that is not there or not the key's, a service out of reach after the retries), stops it: every other
photo would hear the same, one retried request after another.
"""

from __future__ import annotations

import asyncio
import csv
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from arcmatch_client.errors import ArcmatchError, BadInput, Forbidden, NotFound, Unauthorized, Unavailable
from common.names import counted
from common.photos import is_photo, photos_under

# what an enrollment answers for every photo alike: the batch stops at the first (a 404 of an enroll is the
# gallery's: the identity is made by it)
STOPS_THE_BATCH = (Unauthorized, Forbidden, NotFound, Unavailable)


@dataclass(frozen=True)
class Photo:
    identity: str
    path: Path
    line: int = 0  # its line of a manifest (the header is line 1); 0 for a photo of a folder


@dataclass
class BatchReport:
    photos: int = 0  # enrolled
    faces: int = 0
    failed: list[tuple[str, str, str, str]] = field(default_factory=list)  # (path, identity, kind, detail)

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(("path", "identity", "error", "detail"))
            writer.writerows(self.failed)


def photos_of(source: str | Path) -> list[Photo]:
    """The photos a folder or a CSV manifest names, in a stable order."""
    source = Path(source)
    if source.is_dir():  # a person's photos at any depth of their folder; one in nobody's folder is reported
        found = [Photo(person.name, photo) for person in sorted(source.iterdir())
                 if person.is_dir() and not person.name.startswith(".") for photo in photos_under(person)]
        found += [Photo("", loose) for loose in sorted(source.iterdir())
                  if not loose.name.startswith(".") and is_photo(loose)]
    elif source.is_file():
        with open(source, newline="") as rows:
            reader = csv.DictReader(rows)
            if not reader.fieldnames or not {"identity", "path"} <= set(reader.fieldnames):
                raise BadInput(f"{source}: a manifest is a CSV with the columns identity and path")
            found = [Photo(row["identity"] or "", source.parent / (row["path"] or ""), line)
                     for line, row in enumerate(reader, start=2)]
    else:
        raise NotFound(f"no folder or manifest at {source}")
    if not found:
        raise BadInput(f"{source} names no photos (a folder holds one sub-folder of photos per person)")
    return found


def _bar(total: int, shown: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="photo", desc="enroll", disable=not shown, dynamic_ncols=True)


def _count(report: BatchReport, photo: Photo, outcome) -> ArcmatchError | None:
    """One photo's outcome into the report; returns it instead where it stops the batch (every photo's answer)."""
    if outcome is None:  # not tried: the batch had stopped
        return None
    if isinstance(outcome, STOPS_THE_BATCH):
        return outcome
    if isinstance(outcome, ArcmatchError):
        report.failed.append((str(photo.path), photo.identity, getattr(outcome, "error", outcome.kind), str(outcome)))
    else:
        report.photos += 1
        report.faces += len(outcome.face_ids)
    return None


def _stopped(report: BatchReport, total: int, error: ArcmatchError) -> ArcmatchError:
    """The error that stopped a batch, saying how far it got; the report so far rides on it (`.report`)."""
    done = report.photos + len(report.failed)
    stopped = type(error)(f"{error} (the batch stopped: {counted(report.photos, 'photo')} enrolled, "
                          f"{len(report.failed)} refused, {total - done} left: the same command again once this is "
                          "put right)")
    stopped.status, stopped.detail = getattr(error, "status", None), str(stopped)
    stopped.request_id, stopped.error = getattr(error, "request_id", None), getattr(error, "error", error.kind)
    stopped.report = report
    return stopped


def _not_in_a_folder(photo: Photo) -> BadInput | None:
    if photo.identity:
        return None
    if photo.line:
        return BadInput(f"line {photo.line} of the manifest has no identity: whose is it?")
    return BadInput(f"not in a person's folder ({photo.path.parent.name}/<identity>/<photo>): whose is it?")


def _enroll_one(client, photo: Photo, options: dict, stop: threading.Event):
    if stop.is_set():
        return None
    if (loose := _not_in_a_folder(photo)) is not None:
        return loose
    try:
        return client.enroll(photo.identity, [photo.path], **options)  # by path: its name is the face's source
    except OSError as exc:
        return BadInput(f"unreadable: {exc.strerror or exc}")
    except STOPS_THE_BATCH as exc:
        stop.set()
        return exc
    except ArcmatchError as exc:  # this photo's own failure; the batch goes on
        return exc


def enroll_batch(client, source: str | Path, *, workers: int = 4, progress: bool = True, **options) -> BatchReport:
    """Every photo of `source` through a Client, `workers` requests at a time. `options` are enroll's (faces,
    proceed, override_quality, metadata). Raises the first of STOPS_THE_BATCH, with the report so far."""
    photos, report, stop = photos_of(source), BatchReport(), threading.Event()
    fatal = None
    with _bar(len(photos), progress) as bar, ThreadPoolExecutor(workers) as pool:
        for photo, outcome in zip(photos, pool.map(lambda p: _enroll_one(client, p, options, stop), photos),
                                  strict=True):
            stopping = _count(report, photo, outcome)
            fatal = fatal or stopping
            bar.update()
    if fatal is not None:
        raise _stopped(report, len(photos), fatal)
    return report


async def enroll_batch_async(client, source: str | Path, *, concurrency: int = 8, progress: bool = True,
                             **options) -> BatchReport:
    """The same through an AsyncClient, `concurrency` requests in flight; the same stop."""
    photos, report = photos_of(source), BatchReport()
    slots = asyncio.Semaphore(concurrency)

    stop, fatal = asyncio.Event(), None

    async def one(photo: Photo):
        if (loose := _not_in_a_folder(photo)) is not None:
            return loose
        async with slots:
            if stop.is_set():
                return None
            try:
                return await client.enroll(photo.identity, [photo.path], **options)  # by path, as above
            except OSError as exc:
                return BadInput(f"unreadable: {exc.strerror or exc}")
            except STOPS_THE_BATCH as exc:
                stop.set()
                return exc
            except ArcmatchError as exc:
                return exc

    with _bar(len(photos), progress) as bar:
        for photo, task in zip(photos, [asyncio.ensure_future(one(p)) for p in photos], strict=True):
            stopping = _count(report, photo, await task)
            fatal = fatal or stopping
            bar.update()
    if fatal is not None:
        raise _stopped(report, len(photos), fatal)
    return report
