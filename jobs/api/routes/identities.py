"""The gallery's identities: enroll faces, read, list, delete an identity or one of its faces."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from pydantic import AfterValidator

from common.errors import BadInput, NotFound
from indexer.ids import INT64, MAX_IDENTITY_LENGTH
from jobs.api.auditing import note
from jobs.api.deps import CuratorDep, ReadKey, ServiceDep, WriteKey
from jobs.api.errors import responses
from jobs.api.schemas import (
    FORMATS,
    IDENTITY_RULES,
    Enrolled,
    FaceConfirmed,
    FaceDeleted,
    FaceMoved,
    FaceMoveIn,
    FaceOut,
    FaceRejected,
    IdentityDeleted,
    IdentityMergeIn,
    IdentityOut,
    IdentityPage,
    NameIn,
    Promoted,
)
from jobs.api.slashes import restored
from jobs.api.uploads import parse_metadata, read_upload

# documented only (json_schema_extra): validate_identity still answers 400 with its own reason; a "/" in a name is
# sent as %2F (jobs/api/slashes.py)
Identity = Annotated[str, Path(json_schema_extra=IDENTITY_RULES, description="free text without control characters, "
                               f"one visible (a slash sent as %2F), kept in Unicode NFC; at most {MAX_IDENTITY_LENGTH} "
                               "characters and as many UTF-8 bytes"), AfterValidator(restored)]
Cursor = Annotated[str | None, Query(json_schema_extra={**IDENTITY_RULES, "pattern": "^$|" + IDENTITY_RULES["pattern"]},
                                     description="the next_cursor of the previous page")]
Photos = Annotated[list[UploadFile], File(min_length=1, description="photos: " + FORMATS, json_schema_extra={
    "items": {"type": "string", "contentMediaType": "application/octet-stream", "minLength": 1}})]
FaceId = Annotated[int, Path(ge=0, le=INT64[1], description="a face id as enrollment returned it")]
router = APIRouter(prefix="/identities", tags=["identities"], responses=responses(401, 403, 503))


@router.post("/{identity}/faces", status_code=201, responses=responses(400, 409, 413, 415, 422))
async def enroll(_: WriteKey, service: ServiceDep, request: Request, identity: Identity, images: Photos,
                 metadata: Annotated[str, Form(json_schema_extra={"contentMediaType": "application/json"},
                                               description="a JSON object kept with each face; a photo "
                                               "enrolled again keeps the keys this one does not set")] = None,
                 faces: Annotated[Literal["one", "largest"], Form()] = None,
                 override_quality: Annotated[bool, Form()] = False,
                 proceed: Annotated[bool, Form()] = False) -> Enrolled:
    """Each photo must show exactly one face that passes the quality gate, unless `faces` says largest or all;
    `override_quality` enrolls faces below the gate too. A face that matches another identity above the threshold,
    or one rejected from this identity, answers 409 naming it, unless `proceed`; enrollments into one gallery are
    checked and written one at a time, so one person sent under two names at once is still refused once."""
    settings = request.app.state.settings
    if len(images) > settings.max_images_per_request:
        raise BadInput(f"at most {settings.max_images_per_request} images per enrollment, got {len(images)}")
    extra = parse_metadata(metadata)
    limit = settings.max_upload_bytes
    uploads = [(u.filename or f"image{i}", await read_upload(u, limit)) for i, u in enumerate(images)]
    async with request.app.state.decode_slots:
        done = await asyncio.to_thread(service.enroll, identity, uploads, extra, select=faces,
                                       gate=not override_quality, proceed=proceed)
    note(request, done.identity, face_ids=[str(f) for f in done.face_ids])
    return Enrolled(identity=done.identity, face_ids=[str(f) for f in done.face_ids],
                    boxes=[list(b) if b is not None else None for b in done.boxes or []])


@router.get("/{identity}", responses=responses(400, 404, 422))
def get_identity(_: ReadKey, service: ServiceDep, identity: Identity) -> IdentityOut:
    faces = service.identity(identity)
    if not faces:
        raise NotFound(f"no identity {identity!r}")
    return IdentityOut(identity=identity, faces=[FaceOut.of(f) for f in faces])


@router.delete("/{identity}", responses=responses(400, 404, 422))
def delete_identity(_: WriteKey, service: ServiceDep, request: Request, identity: Identity) -> IdentityDeleted:
    deleted = service.delete_identity(identity)
    note(request, identity, deleted_faces=deleted)
    if not deleted:
        raise NotFound(f"no identity {identity!r}")
    return IdentityDeleted(identity=identity, deleted_faces=deleted)


@router.delete("/{identity}/faces/{face}", responses=responses(400, 404, 422))
def delete_face(_: WriteKey, service: ServiceDep, request: Request, identity: Identity, face: FaceId) -> FaceDeleted:
    deleted = service.delete_face(identity, face)
    note(request, identity, face_ids=[str(face)] if deleted else [])
    if not deleted:
        raise NotFound(f"identity {identity!r} has no face {face}")
    return FaceDeleted(identity=identity, deleted_face=str(face))


@router.post("/{identity}/faces/{face}/reject", responses=responses(400, 404, 422))
def reject_face(_: WriteKey, curator: CuratorDep, request: Request, identity: Identity, face: FaceId) -> FaceRejected:
    """"Not this person": the face leaves the identity and becomes unlabelled (clustered again), remembering whom
    it is not, so neither a promotion nor an enrollment of the same photo puts it back without `proceed`."""
    freed = curator.reject(identity, face)
    note(request, identity, face_ids=[str(face)])
    return FaceRejected(identity=identity, face_id=str(face), rejected_from=freed.metadata["rejected_from"])


@router.post("/{identity}/faces/{face}/confirm", responses=responses(400, 404, 422))
def confirm_face(_: WriteKey, curator: CuratorDep, request: Request, identity: Identity, face: FaceId
                 ) -> FaceConfirmed:
    """"It is this person": a face the gallery check listed as unlike its identity, or as nearer another, is kept
    where it is and never listed again while it is there (a hard photo of the right person)."""
    curator.confirm(identity, face)
    note(request, identity, face_ids=[str(face)])
    return FaceConfirmed(identity=identity, face_id=str(face))


@router.post("/{identity}/name", responses=responses(400, 409, 422))
def name_faces(_: WriteKey, curator: CuratorDep, request: Request, identity: Identity, body: NameIn) -> Promoted:
    """Unlabelled faces become this identity's enrolled faces (new or existing): a face the calibration set aside
    as looking like them that is their photo after all, or any other. A face named since, erased, or rejected from
    this identity is listed in `skipped`; none left answers 409, as does a face that matches another identity
    (naming it) unless `proceed`."""
    named = curator.name_faces([int(f) for f in body.face_ids], identity, proceed=body.proceed)
    note(request, named.identity, face_ids=[str(f) for f in named.face_ids])
    return Promoted.of(named)


@router.post("/{identity}/merge", responses=responses(400, 404, 409, 422))
def merge_identity(_: WriteKey, curator: CuratorDep, request: Request, identity: Identity,
                   other: IdentityMergeIn) -> Promoted:
    """Every face of `other.identity` becomes this identity's (one person enrolled under two names); a face once
    rejected from this identity stays where it is, listed in `skipped`. Two names said to be different people
    answer 409 unless `proceed`."""
    merged = curator.merge_identities(identity, other.identity, proceed=other.proceed)
    note(request, identity, merged_from=other.identity, face_ids=[str(f) for f in merged.face_ids])
    return Promoted.of(merged)


@router.post("/{identity}/faces/{face}/move", responses=responses(400, 404, 422))
def move_face(_: WriteKey, curator: CuratorDep, request: Request, identity: Identity, face: FaceId,
              to: FaceMoveIn) -> FaceMoved:
    """A face filed under the wrong person goes to `to.identity`, remembering it is not this one."""
    moved = curator.move_face(identity, face, to.identity, new=to.new)
    note(request, identity, moved_to=to.identity, face_ids=[str(face)])
    return FaceMoved(identity=moved.identity, face_id=str(face), rejected_from=moved.metadata["rejected_from"])


@router.get("", responses=responses(400, 422))
def list_identities(_: ReadKey, service: ServiceDep, cursor: Cursor = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> IdentityPage:
    page, next_cursor = service.list_identities(cursor, limit)
    return IdentityPage(identities=[{"identity": name, "faces": n} for name, n in page], next_cursor=next_cursor)


faces_router = APIRouter(prefix="/faces", tags=["identities"], responses=responses(401, 403, 503))


@faces_router.get("/{face}/image", responses={**responses(404, 422), 200: {"content": {"image/jpeg": {}}}},
                  response_class=Response)
def face_image(_: ReadKey, service: ServiceDep, face: FaceId) -> Response:
    """A small JPEG of the face as the archive keeps it (named or not), for people to look at."""
    return Response(service.face_image(face), media_type="image/jpeg")
