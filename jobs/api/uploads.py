"""Reading an upload with its size limit: a body over the limit is refused, not read to the end."""

from __future__ import annotations

import json

from fastapi import UploadFile

from common.errors import BadInput, PayloadTooLarge


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{upload.filename or 'upload'} is over the {limit} byte limit")
    return data


def parse_metadata(text: str | None) -> dict | None:
    """The enrollment form's `metadata` field: a JSON object, or nothing."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"metadata is not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise BadInput("metadata must be a JSON object")
    return value
