"""Stable face ids and safe filter values.

A face's primary key is derived from its source id (a path, a URI, a caller's face id), so re-ingesting the same
source upserts the same row instead of adding a duplicate, and a job killed half-way can simply be run again.
"""

from __future__ import annotations

import hashlib
import re

from indexer.errors import InvalidValue

MAX_IDENTITY_LENGTH = 256
_IDENTITY = re.compile(r"^[^\x00-\x1f\x7f]+$")


def face_id(source_id: str) -> int:
    """A 63-bit positive integer from blake2b(source_id): Milvus INT64 primary keys are signed."""
    digest = hashlib.blake2b(source_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def validate_identity(identity: str) -> str:
    """Identity ids are free text (names, employee numbers) but never empty, huge or with control characters."""
    if not isinstance(identity, str) or not identity.strip():
        raise InvalidValue("identity must be a non-empty string")
    if len(identity) > MAX_IDENTITY_LENGTH:
        raise InvalidValue(f"identity is {len(identity)} characters, over the limit of {MAX_IDENTITY_LENGTH}")
    if not _IDENTITY.match(identity):
        raise InvalidValue("identity must not contain control characters")
    return identity


def quote(value: str) -> str:
    """A double-quoted Milvus string literal. Milvus Lite has no templated filters, so every value is escaped."""
    if not isinstance(value, str):
        raise InvalidValue(f"filter values must be strings, got {type(value).__name__}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
