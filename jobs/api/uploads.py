"""Reading an upload with its size limit: a body over the limit is refused, not read to the end."""

from __future__ import annotations

import json

from fastapi import UploadFile

from common.errors import BadInput, PayloadTooLarge
from indexer.ids import MAX_METADATA_DEPTH, OWN_METADATA, validate_metadata


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{upload.filename or 'upload'} is over the {limit} byte limit")
    return data


def parse_metadata(text: str | None) -> dict | None:
    """The enrollment form's `metadata` field: a JSON object within the store's limits (checked here, before any
    photo is decoded), or nothing."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"metadata is not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise BadInput(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels") from None
    value = validate_metadata(value)
    taken = sorted(OWN_METADATA.intersection(value))
    if taken:
        raise BadInput(f"metadata may not set {', '.join(taken)}: arcmatch keeps its own record of each face "
                       "under these keys; name yours otherwise")
    return value
