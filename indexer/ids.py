"""Stable face ids, safe filter values, and the limits a row's values must meet before they reach Milvus.

A face's primary key is derived from its source id (a path, a URI, a caller's face id), so re-ingesting the same
source upserts the same row instead of adding a duplicate, and a job killed half-way can simply be run again.

Milvus refuses values past its own limits (a VARCHAR longer than its max_length in bytes, an integer beyond int64
in a JSON field, JSON nested too deep) with errors that look like outages. Every value a caller gives is checked
here first, so the caller hears what is wrong (InvalidValue: HTTP 400, exit 2) and an outage stays an outage.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata

from indexer.errors import InvalidValue

MAX_IDENTITY_LENGTH = 256  # characters, and at most as many UTF-8 bytes: the VARCHAR's max_length counts bytes
FLOAT32_MAX = 3.4028234663852886e38  # vectors are stored as float32: a larger magnitude is infinite there
MAX_SOURCE_BYTES = 2048
MAX_METADATA_BYTES = 16 * 1024  # a face's metadata as compact JSON
MAX_METADATA_DEPTH = 8
# the metadata keys arcmatch writes itself, which a caller's own metadata may not set: what a face's photo was,
SHA256, FACE = "sha256", "face"
# what people decided of it (indexer/writer.py; indexer/health.py's "It is NAME"; indexer/strangers.py, which
# embedder.sources.STRANGER writes at ingestion),
REJECTED_FROM, MERGED_FROM, CONFIRMED_IN, STRANGER = "rejected_from", "merged_from", "confirmed_in", "stranger"
# and a face kept from a search: when, until when, and the threshold it was answered unknown under, with the model
# whose cosine that is (jobs/service.py)
KEPT_FROM, KEPT_AT, EXPIRES_AT, BELOW, BELOW_MODEL = "kept_from", "kept_at", "expires_at", "below", "below_model"
OWN_METADATA = frozenset({SHA256, FACE, REJECTED_FROM, MERGED_FROM, CONFIRMED_IN, STRANGER, KEPT_FROM, KEPT_AT,
                          EXPIRES_AT, BELOW, BELOW_MODEL})
INT64 = (-(2**63), 2**63 - 1)
_IDENTITY = re.compile(r"^[^\x00-\x1f\x7f]+$")
_INVISIBLE = {"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"}  # controls, format and bidi marks, lone accents, spaces


def face_id(source_id: str) -> int:
    """A 63-bit positive integer from blake2b(source_id): Milvus INT64 primary keys are signed."""
    digest = hashlib.blake2b(source_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


UNLABELLED = ""  # the identity of a face nobody has named yet: stored, clustered, never an answer


def validate_identity(identity: str) -> str:
    """Identity ids are free text (names, employee numbers) but never empty, huge or with control characters.
    Returned in Unicode NFC, so a name typed with "é" as one character or as "e" and an accent is one identity,
    not two that look the same; one made only of invisible characters, or holding U+FFFD (what bytes that were
    not UTF-8 decode to, so two different such names would become one), is refused."""
    if not isinstance(identity, str) or not identity:
        raise InvalidValue("identity must be a non-empty string")
    identity = unicodedata.normalize("NFC", identity)
    if "\ufffd" in identity:
        raise InvalidValue("identity holds U+FFFD, the mark of bytes that were not valid UTF-8: send the name as "
                           "UTF-8 text")
    if all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in identity):
        raise InvalidValue("identity must hold a visible character (it is only spaces, format or bidi controls)")
    if identity in (".", ".."):  # a URL's path takes them as "here" and "up": no address could reach the identity
        raise InvalidValue(f"identity may not be {identity!r}: a URL path cannot address it")
    return _filter_text(identity, "identity")


def validate_cursor(after: str) -> str:
    """A page's cursor: any text in name order (the last identity of the page before), so only what a filter's
    string literal cannot hold, or an identity could not be, is refused."""
    if not isinstance(after, str) or not after:
        raise InvalidValue("a cursor must be a non-empty string")
    return _filter_text(after, "cursor")


def _filter_text(text: str, what: str) -> str:
    if len(text) > MAX_IDENTITY_LENGTH:
        raise InvalidValue(f"{what} is {len(text)} characters, over the limit of {MAX_IDENTITY_LENGTH}")
    size = _utf8_size(text, what)
    if size > MAX_IDENTITY_LENGTH:
        raise InvalidValue(f"{what} is {size} bytes in UTF-8, over the limit of {MAX_IDENTITY_LENGTH}")
    if not _IDENTITY.match(text):
        raise InvalidValue(f"{what} must not contain control characters")
    return text


def validate_stored_identity(identity: str) -> str:
    """An identity as a row may carry it: a valid identity, or UNLABELLED for a face nobody has named yet."""
    return identity if identity == UNLABELLED else validate_identity(identity)


def quote(value: str) -> str:
    """A double-quoted Milvus string literal. Milvus Lite has no templated filters, so every value is escaped."""
    if not isinstance(value, str):
        raise InvalidValue(f"filter values must be strings, got {type(value).__name__}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def validate_threshold(threshold: float) -> float:
    """A cosine threshold: between -1 and 1. One beyond answers every search "unknown" (or, below -1, everyone as
    someone) without a word, which is a gallery lost to its users, not a setting."""
    value = float(threshold)
    if not -1.0 <= value <= 1.0:  # NaN fails too
        raise InvalidValue(f"a threshold is a cosine similarity, between -1 and 1; got {threshold}")
    return value


def validate_face_id(face: int) -> int:
    """A face id as Milvus stores it: a non-negative int64 (face_id() makes 63-bit ones)."""
    if isinstance(face, bool) or not isinstance(face, int) or not 0 <= face <= INT64[1]:
        raise InvalidValue(f"a face id is an integer from 0 to {INT64[1]}, got {face!r}")
    return face


def clip_utf8(text: str, limit: int = MAX_SOURCE_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes without splitting a character (a source reference is kept for
    people to read; a path longer than the field is stored cut, not refused)."""
    data = text.encode("utf-8", "replace")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def validate_metadata(metadata: dict | None) -> dict:
    """A face's metadata as Milvus's JSON field can hold it: an object with string keys, nesting at most
    MAX_METADATA_DEPTH deep, integers within int64, finite numbers, at most MAX_METADATA_BYTES as JSON."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidValue("metadata must be a JSON object")
    _check_json(metadata, 1, "metadata")
    size = _utf8_size(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False), "metadata")
    if size > MAX_METADATA_BYTES:
        raise InvalidValue(f"metadata is {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES}")
    return metadata


def _check_json(value, depth: int, where: str) -> None:
    if isinstance(value, (dict, list)):
        if depth > MAX_METADATA_DEPTH:
            raise InvalidValue(f"{where} nests deeper than {MAX_METADATA_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and not isinstance(key, str):
                raise InvalidValue(f"{where} has a key that is not a string: {key!r}")
            _check_json(item, depth + 1, f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]")
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise InvalidValue(f"{where} is an integer beyond 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"{where} is not a finite number")
    else:
        raise InvalidValue(f"{where} is a {type(value).__name__}, not a JSON value")


def _utf8_size(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800" in JSON): not text any store can keep
        raise InvalidValue(f"{what} is not valid Unicode text") from None
