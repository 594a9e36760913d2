"""API keys with scopes and galleries, kept only as SHA-256 hashes.

A key is generated once (`arcmatch apikey NAME --scopes read,write --galleries shop,staff`), shown once, and
configured as the entry `name:scopes:sha256hex[:galleries]` in ARCMATCH_API_KEYS (comma separated; scopes and
galleries joined by `+`). Without the galleries part, or with `*`, a key reaches every gallery. The server never
holds a plain key.

Scopes: `read` (search, list, look), `write` (enroll, delete, name, calibrate) and `admin` (create and erase whole
galleries). A key that may not reach a gallery is told the gallery does not exist (jobs/api/access.py), so it
cannot learn which other galleries there are.

`metrics` is Prometheus's: /metrics is open (counts and timings, the probes' kind of route) until a key with that
scope is configured; from then on only such a key reads it, sent as Prometheus sends one (`Authorization: Bearer`)
or as X-API-Key. Its labels name the galleries, which a deployment shared by several owners may not want to show
to whoever reaches the port. A metrics key reads nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from common.errors import BadInput, Forbidden, Unauthorized

SCOPES = ("read", "write", "admin", "metrics")
METRICS = "metrics"
ALL_GALLERIES = "*"


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: frozenset[str]
    digest: str
    galleries: frozenset[str] | None = None  # None: every gallery

    def reaches(self, gallery: str) -> bool:
        return self.galleries is None or gallery in self.galleries


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(name: str, scopes: list[str], galleries: list[str] | None = None) -> tuple[str, str]:
    """A fresh random key and the configuration entry that admits it: (key, entry). `galleries` None or
    containing `*`: every gallery."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise BadInput(f"scopes must be a non-empty subset of {SCOPES}, got {scopes}")
    if not name or any(c in name for c in ":,"):
        raise BadInput("a key name must be non-empty and contain no ':' or ','")
    entry_galleries = _galleries_part(galleries)
    key = "am_" + secrets.token_urlsafe(32)
    scoped = "+".join(sorted(set(scopes)))  # read,read is read
    return key, f"{name}:{scoped}:{digest(key)}" + (f":{entry_galleries}" if entry_galleries else "")


def _galleries_part(galleries: list[str] | None) -> str:
    from indexer.galleries import check_gallery

    if galleries is None or ALL_GALLERIES in galleries:
        return ""
    if not galleries:
        raise BadInput("a key reaches at least one gallery (or `*` for all)")
    return "+".join(sorted({check_gallery(g) for g in galleries}))


def parse_keys(text: str) -> list[ApiKey]:
    keys = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        parts = entry.split(":")
        if len(parts) not in (3, 4) or len(parts[2]) != 64:
            raise BadInput(f"API key entry {entry[:20]!r}... must be name:scopes:sha256hex[:galleries]")
        scopes = frozenset(parts[1].split("+"))
        if not scopes <= set(SCOPES):
            raise BadInput(f"API key {parts[0]!r} has unknown scopes {sorted(scopes - set(SCOPES))}")
        galleries = None
        if len(parts) == 4 and parts[3] != ALL_GALLERIES:
            try:
                galleries = frozenset(_galleries_part(parts[3].split("+")).split("+"))
            except BadInput as exc:
                raise BadInput(f"API key {parts[0]!r}: {exc}") from None
        keys.append(ApiKey(parts[0], scopes, parts[2].lower(), galleries))
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


def bearer(authorization: str | None) -> str | None:
    """The key in an `Authorization: Bearer KEY` header, or None."""
    kind, _, value = (authorization or "").partition(" ")
    return (value.strip() or None) if kind.lower() == "bearer" else None


def scrape_refusal(keys: list[ApiKey], presented: str | None) -> Unauthorized | Forbidden | None:
    """Why a scrape of /metrics presenting this key is refused (the error to answer with), or None: every scrape
    is welcome while no key has the metrics scope."""
    if not any(METRICS in key.scopes for key in keys):
        return None
    key = authenticate(presented, keys)
    if key is None:
        return Unauthorized("missing or unknown metrics key (header Authorization: Bearer KEY, or X-API-Key)")
    if METRICS not in key.scopes:
        return Forbidden(f"API key {key.name!r} lacks the 'metrics' scope")
    return None
