"""The galleries one API process answers for: the default one (built at start, or the Serve replica's own) and the
others, opened on their first request and kept, at most `ARCMATCH_OPEN_GALLERIES` of them, least recently used
dropped first.

The others share the default service's model and Milvus client: a gallery costs a few collection handles, not a
model. A gallery erased by another process is noticed within CHECK_EVERY_S (its alias is gone) and answers 404
from then on; this process forgets one it erased itself at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from common.errors import BadInput, NotFound
from jobs.api.access import GalleryNotFound
from jobs.service import IdentityService

CHECK_EVERY_S = 10.0


class GalleryServices:
    def __init__(self, settings, provider: Callable[[], tuple[IdentityService, Any]]) -> None:
        self.settings, self.provider = settings, provider
        self.default_gallery = settings.gallery
        self._open: OrderedDict[str, tuple[IdentityService, float]] = OrderedDict()
        self._lock = threading.Lock()

    def default(self) -> tuple[IdentityService, Any]:
        return self.provider()

    def get(self, gallery: str) -> tuple[IdentityService, Any]:
        """(service, batcher): the batcher (Ray Serve's) for the default gallery only, whose service it holds."""
        if gallery == self.default_gallery:
            return self.provider()
        with self._lock:  # one opening per gallery at a time; opening is a few store calls
            found = self._open.get(gallery)
            now = time.monotonic()
            if found is not None and now - found[1] >= CHECK_EVERY_S:
                if found[0].galleries.serving() is None:  # erased elsewhere
                    del self._open[gallery]
                    raise GalleryNotFound(gallery)
                found = self._open[gallery] = (found[0], now)
            if found is None:
                found = self._open[gallery] = (self._open_service(gallery), now)
                while len(self._open) > self.settings.open_galleries:
                    self._open.popitem(last=False)
            self._open.move_to_end(gallery)
            return found[0], None

    def _open_service(self, gallery: str) -> IdentityService:
        default = self.provider()[0]
        try:
            return IdentityService.open(self.settings.model_copy(update={"gallery": gallery}), create=False,
                                        embedder=default.embedder, client=default.galleries.client)
        except (NotFound, BadInput):  # no such gallery, or a name no gallery can have
            raise GalleryNotFound(gallery) from None

    def forget(self, gallery: str) -> None:
        with self._lock:
            self._open.pop(gallery, None)
