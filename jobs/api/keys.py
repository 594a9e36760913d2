"""API keys with scopes, kept only as SHA-256 hashes.

A key is generated once (`arcmatch apikey NAME --scopes read,write`), shown once, and configured as the entry
`name:scopes:sha256hex` in ARCMATCH_API_KEYS (comma separated). The server never holds a plain key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from common.errors import BadInput

SCOPES = ("read", "write")


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: frozenset[str]
    digest: str


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(name: str, scopes: list[str]) -> tuple[str, str]:
    """A fresh random key and the configuration entry that admits it: (key, entry)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise BadInput(f"scopes must be a non-empty subset of {SCOPES}, got {scopes}")
    if not name or any(c in name for c in ":,"):
        raise BadInput("a key name must be non-empty and contain no ':' or ','")
    key = "am_" + secrets.token_urlsafe(32)
    return key, f"{name}:{'+'.join(sorted(scopes))}:{digest(key)}"


def parse_keys(text: str) -> list[ApiKey]:
    keys = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        parts = entry.split(":")
        if len(parts) != 3 or len(parts[2]) != 64:
            raise BadInput(f"API key entry {entry[:20]!r}... must be name:scopes:sha256hex")
        scopes = frozenset(parts[1].split("+"))
        if not scopes <= set(SCOPES):
            raise BadInput(f"API key {parts[0]!r} has unknown scopes {sorted(scopes - set(SCOPES))}")
        keys.append(ApiKey(parts[0], scopes, parts[2].lower()))
    return keys


def authenticate(presented: str | None, keys: list[ApiKey]) -> ApiKey | None:
    """The key entry matching `presented`, compared in constant time, or None."""
    if not presented:
        return None
    wanted = digest(presented)
    match = None
    for key in keys:
        if hmac.compare_digest(wanted, key.digest):
            match = key
    return match
