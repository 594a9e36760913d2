"""Enrolling many photos through the API: from a folder (one sub-folder per person, named after them) or a CSV
manifest (columns `identity` and `path`, paths relative to the manifest), one photo per request, several at once,
with a progress bar.

One photo per request, so a photo the service refuses (no face, two faces, a corrupt file, a face of someone
else) fails alone and is reported with the reason, while the rest go in. Enrolling is idempotent (a photo's face
id derives from the identity and the photo), so the same batch run again after a crash or a partial failure adds
nothing twice and fills in what was missing.
"""

from __future__ import annotations

import asyncio
import csv
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from arcmatch_client.errors import ArcmatchError, BadInput, NotFound


@dataclass(frozen=True)
class Photo:
    identity: str
    path: Path


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
                 if person.is_dir() and not person.name.startswith(".")
                 for photo in sorted(person.rglob("*")) if photo.is_file()
                 and not any(part.startswith(".") for part in photo.relative_to(person).parts)]
        found += [Photo("", loose) for loose in sorted(source.iterdir())
                  if loose.is_file() and not loose.name.startswith(".")]
    elif source.is_file():
        with open(source, newline="") as rows:
            reader = csv.DictReader(rows)
            if not reader.fieldnames or not {"identity", "path"} <= set(reader.fieldnames):
                raise BadInput(f"{source}: a manifest is a CSV with the columns identity and path")
            found = [Photo(row["identity"], source.parent / row["path"]) for row in reader]
    else:
        raise NotFound(f"no folder or manifest at {source}")
    if not found:
        raise BadInput(f"{source} names no photos (a folder holds one sub-folder of photos per person)")
    return found


def _bar(total: int, shown: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="photo", desc="enroll", disable=not shown, dynamic_ncols=True)


def _count(report: BatchReport, photo: Photo, outcome) -> None:
    if isinstance(outcome, ArcmatchError):
        report.failed.append((str(photo.path), photo.identity, outcome.kind, str(outcome)))
    else:
        report.photos += 1
        report.faces += len(outcome.face_ids)


def _not_in_a_folder(photo: Photo) -> BadInput | None:
    return (None if photo.identity else
            BadInput(f"not in a person's folder ({photo.path.parent.name}/<identity>/<photo>): whose is it?"))


def _enroll_one(client, photo: Photo, options: dict):
    if (loose := _not_in_a_folder(photo)) is not None:
        return loose
    try:
        return client.enroll(photo.identity, [photo.path], **options)  # by path: its name is the face's source
    except OSError as exc:
        return BadInput(f"unreadable: {exc.strerror or exc}")
    except ArcmatchError as exc:  # this photo's own failure; the batch goes on
        return exc


def enroll_batch(client, source: str | Path, *, workers: int = 4, progress: bool = True, **options) -> BatchReport:
    """Every photo of `source` through a Client, `workers` requests at a time. `options` are enroll's (faces,
    proceed, override_quality, metadata)."""
    photos, report = photos_of(source), BatchReport()
    with _bar(len(photos), progress) as bar, ThreadPoolExecutor(workers) as pool:
        for photo, outcome in zip(photos, pool.map(lambda p: _enroll_one(client, p, options), photos), strict=True):
            _count(report, photo, outcome)
            bar.update()
    return report


async def enroll_batch_async(client, source: str | Path, *, concurrency: int = 8, progress: bool = True,
                             **options) -> BatchReport:
    """The same through an AsyncClient, `concurrency` requests in flight."""
    photos, report = photos_of(source), BatchReport()
    slots = asyncio.Semaphore(concurrency)

    async def one(photo: Photo):
        if (loose := _not_in_a_folder(photo)) is not None:
            return loose
        async with slots:
            try:
                return await client.enroll(photo.identity, [photo.path], **options)  # by path, as above
            except OSError as exc:
                return BadInput(f"unreadable: {exc.strerror or exc}")
            except ArcmatchError as exc:
                return exc

    with _bar(len(photos), progress) as bar:
        for photo, task in zip(photos, [asyncio.ensure_future(one(p)) for p in photos], strict=True):
            _count(report, photo, await task)
            bar.update()
    return report
