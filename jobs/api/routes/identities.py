"""The gallery's identities: enroll faces, read, list, delete an identity or one of its faces."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from common.errors import NotFound
from jobs.api.deps import ReadKey, ServiceDep, WriteKey
from jobs.api.errors import responses
from jobs.api.schemas import Enrolled, FaceDeleted, FaceOut, IdentityDeleted, IdentityOut, IdentityPage
from jobs.api.uploads import parse_metadata, read_upload

router = APIRouter(prefix="/v1/identities", tags=["identities"], responses=responses(401, 403, 503))


@router.post("/{identity}/faces", status_code=201, responses=responses(400, 409, 413, 422))
async def enroll(_: WriteKey, service: ServiceDep, request: Request, identity: str,
                 images: Annotated[list[UploadFile], File()],
                 metadata: Annotated[str | None, Form()] = None,
                 faces: Annotated[Literal["one", "largest", "all"] | None, Form()] = None,
                 override_quality: Annotated[bool, Form()] = False) -> Enrolled:
    """Each photo must show exactly one face that passes the quality gate, unless `faces` says largest or all;
    `override_quality` enrolls faces below the gate too."""
    extra, limit = parse_metadata(metadata), request.app.state.settings.max_upload_bytes
    uploads = [(u.filename or f"image{i}", await read_upload(u, limit)) for i, u in enumerate(images)]
    done = await asyncio.to_thread(service.enroll, identity, uploads, extra, select=faces, gate=not override_quality)
    return Enrolled(identity=done.identity, face_ids=[str(f) for f in done.face_ids])


@router.get("/{identity}", responses=responses(400, 404))
def get_identity(_: ReadKey, service: ServiceDep, identity: str) -> IdentityOut:
    faces = service.identity(identity)
    if not faces:
        raise NotFound(f"no identity {identity!r}")
    return IdentityOut(identity=identity, faces=[FaceOut.of(f) for f in faces])


@router.delete("/{identity}", responses=responses(400, 404))
def delete_identity(_: WriteKey, service: ServiceDep, identity: str) -> IdentityDeleted:
    deleted = service.delete_identity(identity)
    if not deleted:
        raise NotFound(f"no identity {identity!r}")
    return IdentityDeleted(identity=identity, deleted_faces=deleted)


@router.delete("/{identity}/faces/{face}", responses=responses(400, 404, 422))
def delete_face(_: WriteKey, service: ServiceDep, identity: str, face: int) -> FaceDeleted:
    if not service.delete_face(identity, face):
        raise NotFound(f"identity {identity!r} has no face {face}")
    return FaceDeleted(identity=identity, deleted_face=str(face))


@router.get("", responses=responses(400, 422))
def list_identities(_: ReadKey, service: ServiceDep, cursor: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> IdentityPage:
    page, next_cursor = service.list_identities(cursor, limit)
    return IdentityPage(identities=[{"identity": name, "faces": n} for name, n in page], next_cursor=next_cursor)
