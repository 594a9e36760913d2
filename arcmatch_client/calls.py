"""Every operation of the API, written once as a `Call` (what to send, what the answer becomes); the sync and the
async client differ only in how they send one (arcmatch_client/client.py).

A client is scoped to a gallery (`client.gallery("shop")`) or to the service's default gallery; the calls about
galleries themselves and the service's health are not scoped.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from arcmatch_client import models as m
from arcmatch_client.errors import BadInput

Photo = bytes | str | Path | BinaryIO  # the photo's bytes, a path to it, or a file opened for reading in binary


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # under the gallery's prefix when `scoped`
    params: dict | None = None
    json: Any = None
    data: dict | None = None
    files: list | None = None
    result: Any = None  # the answer's type (a generated model, list[...]), bytes for the raw body, None for JSON
    pick: Callable[[Any], Any] | None = None  # what of the parsed answer to return
    scoped: bool = True


def _segment(value: str | int) -> str:
    """A path segment; "." and ".." encoded too, which a URL would otherwise resolve as "here" and "up" (a
    delete of identity ".." would then address the gallery)."""
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


def _photo(photo: Photo) -> tuple[str, bytes]:
    """A photo as a file to send: a path or an open file by its name; bytes by their digest, so the face's
    recorded source (what a gallery check names it by) tells one such photo from another, where "photo0" was every
    request's first. A path that cannot be read is BadInput in one line, as the CLI says it."""
    if isinstance(photo, bytes | bytearray | memoryview):
        data = bytes(photo)
        return f"photo-{hashlib.sha256(data).hexdigest()[:12]}", data
    if hasattr(photo, "read"):
        if isinstance(photo, io.TextIOBase):
            raise BadInput(f"{getattr(photo, 'name', 'the file')} is open as text: open a photo with 'rb'")
        data = photo.read()
        name = Path(str(getattr(photo, "name", ""))).name
        return (name, data) if name else _photo(data)
    if not isinstance(photo, str | Path):
        raise BadInput(f"a photo is its bytes, a path or a file opened with 'rb', not {type(photo).__name__}")
    path = Path(photo)
    try:
        return path.name, path.read_bytes()
    except IsADirectoryError:
        raise BadInput(f"{path} is a folder, not a photo (enroll_batch enrolls a folder of folders)") from None
    except FileNotFoundError:
        if path.is_symlink():
            raise BadInput(f"{path}: a link to {os.readlink(path)}, which is not there") from None
        raise BadInput(f"{path}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _given(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _finite(embeddings: Sequence[Sequence[float]], **numbers: float | None) -> list[list[float]]:
    """The rows as floats, or BadInput naming the first NaN or infinity: JSON cannot carry one, and the service
    would refuse it anyway (where httpx's encoder raised a bare ValueError)."""
    rows = [[float(x) for x in v] for v in embeddings]
    for name, value in numbers.items():
        if value is not None and not math.isfinite(value):
            raise BadInput(f"{name} is {value!r}: it must be a finite number")
    for i, row in enumerate(rows):
        for j, x in enumerate(row):
            if not math.isfinite(x):
                raise BadInput(f"embeddings[{i}][{j}] is {x!r}: every value must be a finite number")
    return rows


class Operations:
    """The API, one method per route; `_run` sends a Call (returns the result, or an awaitable of it)."""

    def __init__(self, gallery: str | None) -> None:
        self.scope_gallery = gallery

    def _run(self, call: Call):
        raise NotImplementedError

    def _path(self, call: Call) -> str:
        if not call.scoped:
            return call.path
        prefix = f"/v1/galleries/{_segment(self.scope_gallery)}" if self.scope_gallery else "/v1"
        return prefix + call.path

    # the service and its galleries
    def health(self):
        return self._run(Call("GET", "/v1/health", result=m.Health, scoped=False))

    def ready(self):
        """What the service serves of this gallery (a read key); Unavailable while it cannot serve."""
        if self.scope_gallery:
            return self._run(Call("GET", f"/v1/galleries/{_segment(self.scope_gallery)}/ready", result=m.Ready,
                                  scoped=False))
        return self._run(Call("GET", "/v1/ready", result=m.Ready, scoped=False))

    def galleries(self, cursor: str | None = None, limit: int | None = None):
        """The galleries this key reaches, one page (100 unless `limit` says, at most 1000); its `next_cursor`
        asks for the next (None: the last page)."""
        return self._run(Call("GET", "/v1/galleries", params=_given(cursor=cursor, limit=limit), result=m.GalleryList,
                              scoped=False))

    def create_gallery(self, name: str, model: str | None = None, fpir: float | None = None):
        """An empty gallery of the service's model; `fpir`: what its calibrations aim at when none is given."""
        return self._run(Call("POST", "/v1/galleries", json=_given(name=name, model=model, fpir=fpir),
                              result=m.Gallery, scoped=False))

    def describe_gallery(self, name: str):
        return self._run(Call("GET", f"/v1/galleries/{_segment(name)}", result=m.GalleryDetail, scoped=False))

    def delete_gallery(self, name: str, erase: int | None = None):
        """Erases every face of the gallery; BadInput (naming the count) unless `erase` is that count."""
        return self._run(Call("DELETE", f"/v1/galleries/{_segment(name)}", params=_given(erase=erase),
                              result=m.GalleryErased, scoped=False))

    # searching
    def search(self, photo: Photo, *, threshold: float | None = None, fpir: float | None = None,
               k: int | None = None, top_n: int = 1, faces: str = "all"):
        """A decision per face in the photo ("all") or for its largest face."""
        form = _given(threshold=threshold, fpir=fpir, k=k, top_n=top_n, faces=faces)
        return self._run(Call("POST", "/search", data={k: str(v) for k, v in form.items()},
                              files=[("image", _photo(photo))], result=m.Search, pick=lambda a: a.faces))

    def search_embeddings(self, embeddings: Sequence[Sequence[float]], *, threshold: float | None = None,
                          fpir: float | None = None, k: int | None = None, top_n: int = 1):
        body = _given(embeddings=_finite(embeddings, threshold=threshold, fpir=fpir), threshold=threshold, fpir=fpir,
                      k=k, top_n=top_n)
        return self._run(Call("POST", "/search/embedding", json=body, result=list[m.Decision]))

    # identities and their faces
    def enroll(self, identity: str, photos: Sequence[Photo], *, metadata: dict | None = None,
               faces: str | None = None, override_quality: bool = False, proceed: bool = False):
        """Conflict when a face matches someone else (or was rejected from `identity`), unless `proceed`."""
        if not identity.strip():
            raise BadInput("the identity's name is empty")
        if isinstance(photos, bytes | str | Path) or hasattr(photos, "read"):  # one photo, not a list of them
            photos = [photos]
        if not photos:
            raise BadInput(f"no photos to enroll as {identity!r}")
        form = _given(metadata=json.dumps(metadata) if metadata is not None else None, faces=faces,
                      override_quality=str(override_quality).lower(), proceed=str(proceed).lower())
        files = [("images", _photo(p)) for p in photos]
        return self._run(Call("POST", f"/identities/{_segment(identity)}/faces", data=form, files=files,
                              result=m.Enrolled))

    def identities(self, cursor: str | None = None, limit: int = 100):
        """One page; its `next_cursor` asks for the next (None: the last page)."""
        return self._run(Call("GET", "/identities", params=_given(cursor=cursor, limit=limit), result=m.IdentityPage))

    def identity(self, identity: str):
        return self._run(Call("GET", f"/identities/{_segment(identity)}", result=m.Identity))

    def delete_identity(self, identity: str):
        return self._run(Call("DELETE", f"/identities/{_segment(identity)}", result=m.IdentityDeleted))

    def delete_face(self, identity: str, face_id: str | int):
        return self._run(Call("DELETE", f"/identities/{_segment(identity)}/faces/{_segment(face_id)}",
                              result=m.FaceDeleted))

    def reject_face(self, identity: str, face_id: str | int):
        """"Not this person": the face leaves `identity` and stays unlabelled."""
        return self._run(Call("POST", f"/identities/{_segment(identity)}/faces/{_segment(face_id)}/reject",
                              result=m.FaceRejected))

    def confirm_face(self, identity: str, face_id: str | int):
        """"It is this person": a face the gallery check listed stays, and is not listed again."""
        return self._run(Call("POST", f"/identities/{_segment(identity)}/faces/{_segment(face_id)}/confirm",
                              result=m.FaceConfirmed))

    def move_face(self, identity: str, face_id: str | int, to: str, *, new: bool = False):
        """The face goes to `to`, remembering it is not `identity`'s; NotFound where no face is `to`'s, unless
        `new` (someone enrolled under no name yet)."""
        return self._run(Call("POST", f"/identities/{_segment(identity)}/faces/{_segment(face_id)}/move",
                              json={"identity": to, "new": new}, result=m.FaceMoved))

    def merge_identities(self, identity: str, other: str, *, proceed: bool = False):
        """Every face of `other` becomes `identity`'s (one person under two names); Conflict where a person said
        they are different people, unless `proceed`."""
        return self._run(Call("POST", f"/identities/{_segment(identity)}/merge",
                              json={"identity": other, "proceed": proceed}, result=m.Promoted))

    def name_faces(self, identity: str, face_ids: Sequence[str | int], *, proceed: bool = False):
        """Unlabelled faces become `identity`'s enrolled faces (e.g. one the calibration set aside as looking like
        them that is their photo after all)."""
        return self._run(Call("POST", f"/identities/{_segment(identity)}/name",
                              json={"face_ids": [str(f) for f in face_ids], "proceed": proceed}, result=m.Promoted))

    def face_image(self, face_id: str | int):
        """The archived image of a face (JPEG or PNG bytes)."""
        return self._run(Call("GET", f"/faces/{_segment(face_id)}/image", result=bytes))

    # the threshold
    def calibration(self):
        return self._run(Call("GET", "/calibration", result=m.Calibration))

    def calibrate(self, fpir: float | None = None, *, sample: int = 5000, dry_run: bool = False,
                  method: str = "tail"):
        """The gallery's threshold for `fpir` (default: the gallery's own target) from its faces, kept unless
        `dry_run`."""
        body = _given(fpir=fpir, sample=sample, dry_run=dry_run, method=method)
        return self._run(Call("POST", "/calibration", json=body, result=m.GalleryCalibration))

    def clear_calibration(self):
        return self._run(Call("DELETE", "/calibration", result=m.Calibration))

    # faces nobody has named
    def clusters(self, offset: int = 0, limit: int = 50, min_size: int = 2):
        return self._run(Call("GET", "/clusters", params={"offset": offset, "limit": limit, "min_size": min_size},
                              result=m.ClusterPage))

    def cluster(self, cluster: int):
        return self._run(Call("GET", f"/clusters/{int(cluster)}", result=m.Cluster))

    def promote(self, cluster: int, identity: str, *, face_ids: Sequence[str | int] | None = None,
                proceed: bool = False, members: str | None = None):
        """`members`: the cluster's `members` as you read it; Conflict, nothing named, if it holds other faces now."""
        body = _given(identity=identity, face_ids=[str(f) for f in face_ids] if face_ids is not None else None,
                      proceed=proceed, members=members)
        return self._run(Call("POST", f"/clusters/{int(cluster)}/promote", json=body, result=m.Promoted))

    def split_cluster(self, cluster: int, face_ids: Sequence[str | int]):
        return self._run(Call("POST", f"/clusters/{int(cluster)}/split", json={"face_ids": [str(f) for f in face_ids]},
                              result=m.Cluster))

    def merge_clusters(self, clusters: Sequence[int]):
        return self._run(Call("POST", "/clusters/merge", json={"clusters": [int(c) for c in clusters]},
                              result=m.Cluster))

    # the gallery's health
    def check(self):
        return self._run(Call("GET", "/gallery/check", result=m.HealthReport))

    def distinct_pairs(self):
        return self._run(Call("GET", "/gallery/distinct", result=m.Distinct))

    def different_people(self, first: str, second: str):
        return self._run(Call("POST", "/gallery/distinct", json={"identities": [first, second]}, result=m.Distinct))

    def confirm_strangers(self, sources: Sequence[str], *, proceed: bool = False):
        """These unlabelled faces (by source) are nobody who will be enrolled: calibration counts them as they are.
        Conflict where one matches someone enrolled at the gallery's threshold, unless `proceed`."""
        return self._run(Call("POST", "/gallery/strangers", json={"sources": list(sources), "proceed": proceed},
                              result=m.Strangers))

    def confirm_kept_strangers(self):
        """Every face kept from searches that is still unnamed is a stranger: say it once the enrolled among them are
        named; calibration reads them below the threshold they were answered unknown under."""
        return self._run(Call("POST", "/gallery/strangers/kept", result=m.Strangers))
