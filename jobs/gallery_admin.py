"""Making and erasing a whole gallery: the one rule the CLI (`arcmatch galleries`) and the API (`/v1/galleries`)
both follow, so neither can erase faces the other would have counted.

Making one before its first face fixes the model it is served by. Erasing one is the only way every face of a
gallery goes, archive included: the faces are counted first, in every collection of the gallery (an earlier
model's, a re-embed's target, all of them when the alias is gone) and in the archive, and nothing is erased unless
the caller repeats that count, so a wrong name never costs a gallery.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from common.errors import ArcmatchError, BadInput, Conflict, NotFound, Unavailable
from indexer.archive import FaceArchive
from indexer.galleries import Galleries, check_gallery
from indexer.store import CollectionInfo, FaceIndex


@dataclass(frozen=True)
class Summary:
    """What a listing says of a gallery: the model it is served by, its faces, its calibrations' target. `faces`
    is None in a listing while the store cannot count that gallery (its collection loading again after a restart)."""

    gallery: str
    model_version: str
    faces: int | None
    target_fpir: float


def summary(client, gallery: str) -> Summary:
    from indexer.calibration import target_fpir

    index = FaceIndex(client, Galleries(client, gallery).serving())
    return Summary(gallery, index.info().model_version, index.count(consistency="Session"), target_fpir(index))


def summaries(client, after: str | None = None, limit: int | None = None,
              keep: Callable[[str], bool] = lambda name: True) -> tuple[list[Summary], str | None]:
    """`summary` of a page of galleries (indexer.galleries.galleries_page), and where the next page starts: the
    record each gallery's listing read is used again, so a gallery costs two calls (its record, its count), not
    eight."""
    from indexer.calibration import target_fpir_in
    from indexer.galleries import galleries_page

    page, next_cursor = galleries_page(client, after, limit, keep)
    counts = [_count(FaceIndex(client, found.name, info=found.info)) for found in page]  # through the alias
    if page and all(isinstance(c, Unavailable) for c in counts):
        raise counts[0]  # the store itself is out, not one gallery: the listing says so rather than list nothing
    listed = [Summary(found.name, found.info.model_version, None if isinstance(faces, Unavailable) else faces,
                      target_fpir_in(found.properties)) for found, faces in zip(page, counts, strict=True)]
    return listed, next_cursor


def _count(index: FaceIndex) -> int | Unavailable:
    """A gallery's faces for a listing, or why they could not be counted: one gallery whose collection is still
    loading must not fail the listing of every other. Session, as a Strong count waits ~200 ms on a server."""
    try:
        return index.count(consistency="Session")
    except Unavailable as exc:
        return exc


@dataclass(frozen=True)
class Erasure:
    """What erasing a gallery loses: faces (the most any of its collections or its archive holds)."""

    gallery: str
    faces: int
    archived: int
    collections: list[str]


class _Turn:
    """One gallery's lock and how many requests hold it or wait for it: the last one out removes it, so a service
    that makes and erases many galleries keeps none of theirs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


_TURNS: dict[str, _Turn] = {}
_TURNS_GUARD = threading.Lock()


@contextmanager
def _one_at_a_time(gallery: str) -> Iterator[None]:
    """Making and erasing one gallery, one request at a time in this process: each is several store calls (look,
    create the collection, create the alias; count, drop), and two at once met each other half-way (a QA pass:
    six simultaneous creates of one name answered 201 once, then a 400 "refused a value of this has_collection"
    and 503s from create_alias; four deletes, 404s naming describe_alias)."""
    with _TURNS_GUARD:
        turn = _TURNS.setdefault(gallery, _Turn())
        turn.users += 1
    try:
        with turn.lock:
            yield
    finally:
        with _TURNS_GUARD:
            turn.users -= 1
            if turn.users == 0:
                del _TURNS[gallery]


def create(client, gallery: str, embedder, target_fpir: float | None = None) -> FaceIndex:
    """The gallery, empty, served by `embedder`'s model (its threshold recorded as the model's), with the FPIR its
    calibrations aim at when none is asked for; Conflict when a gallery of that name exists (made by another
    process meanwhile included)."""
    from indexer import calibration

    galleries = Galleries(client, check_gallery(gallery))
    with _one_at_a_time(gallery):
        if galleries.serving() is not None or galleries.collections():
            raise Conflict(f"gallery {gallery!r} exists already")
        model = embedder.calibration
        info = CollectionInfo.of_model(embedder.spec, model.threshold if model else None)
        try:
            index = galleries.open(info, create=True)
        except ArcmatchError:
            if galleries.serving() is not None:  # another process made it between the look and the alias
                raise Conflict(f"gallery {gallery!r} exists already") from None
            raise
        if target_fpir is not None:
            calibration.set_target(index, target_fpir)
        return index


def count(client, gallery: str, archive_root: str | None) -> Erasure:
    galleries = Galleries(client, check_gallery(gallery))
    collections = galleries.collections()
    if not collections:
        raise NotFound(f"gallery {gallery!r} not found")
    archive = FaceArchive(archive_root, gallery) if archive_root is not None else None
    archived = len(archive.live_versions()) if archive is not None else 0
    faces = max([FaceIndex(client, c.name).count() for c in collections] + [archived])
    return Erasure(gallery, faces, archived, [c.name for c in collections])


def erase(client, gallery: str, archive_root: str | None, confirmed: int | None, *, flag: str) -> Erasure:
    """Erase the gallery when `confirmed` is the number of faces it holds (or it holds none); BadInput naming
    that number otherwise (`flag` is how the caller says it: `--erase`, `erase=`)."""
    with _one_at_a_time(gallery):
        found = count(client, gallery, archive_root)
        if found.faces and confirmed != found.faces:
            raise BadInput(f"gallery {gallery!r} holds {found.faces} faces ({found.archived} archived images, "
                           f"{len(found.collections)} collections): repeat with {flag}{found.faces} to erase them all")
        Galleries(client, gallery).drop_all()
        if archive_root is not None:
            FaceArchive(archive_root, gallery).drop()
        return found
