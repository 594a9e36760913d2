"""arcmatch's Python client: the search API's every route, typed answers, the errors as one family, retries on 503.

    from arcmatch_client import Client

    with Client("http://localhost:8000", key) as api:
        api.gallery("shop").enroll("ann", ["ann.jpg"])
        [face] = api.gallery("shop").search("door.jpg")
        print(face.identity if face.match else "unknown", face.score)

AsyncClient has the same methods, each awaitable. It needs httpx (and tqdm for batch progress), nothing else of
arcmatch's server side.
"""

from arcmatch_client import errors, models
from arcmatch_client.batch import BatchReport, enroll_batch, enroll_batch_async, photos_of
from arcmatch_client.client import AsyncClient, Client

__all__ = ["AsyncClient", "BatchReport", "Client", "enroll_batch", "enroll_batch_async", "errors", "models",
           "photos_of"]
