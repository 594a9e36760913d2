"""Dynamic batching for the Ray Serve deployment: concurrent requests share one model call and one Milvus search.

Ray Serve's @serve.batch collects the calls that arrive within `batch_wait_timeout_s` (up to `max_batch_size`)
into one list. A batched search runs with the largest k of the batch; each request then keeps its own k,
threshold and top_n (decided by the service, as without batching), so batching never changes an answer.
"""

from __future__ import annotations

import numpy as np
from ray import serve

from indexer.decision import Decision
from jobs.service import IdentityService


class Batcher:
    def __init__(self, service: IdentityService, max_batch_size: int = 16, batch_wait_timeout_s: float = 0.005):
        self.service = service
        for method in (self.embed, self.search):
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def embed(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.service.embedder.embed(np.stack(images)))

    @serve.batch
    async def search(self, queries: list[tuple[np.ndarray, float | None, int, int]]) -> list[Decision]:
        """Checked vectors with their (threshold, k, top_n): the service's one search-and-decide for all."""
        return self.service.lookup.search_checked(np.stack([q[0] for q in queries]), [q[1:] for q in queries])
