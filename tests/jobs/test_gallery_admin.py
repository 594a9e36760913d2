"""Listing the galleries of a store while one of them cannot be counted: the others are still listed, and the one
says so, as a service restarted on a Milvus server loads its collections again one at a time."""

import pytest

from common.errors import Unavailable
from indexer.galleries import Galleries
from indexer.store import CollectionInfo, connect
from jobs import gallery_admin

pytestmark = pytest.mark.stores("server")  # Milvus Lite counts a collection it cannot load; the server cannot


def _unloadable(client, gallery: str) -> None:
    """The gallery's collection released and its index gone: the server can neither load nor count it."""
    collection = Galleries(client, gallery).serving()
    client.release_collection(collection)
    for index in client.list_indexes(collection):
        client.drop_index(collection, index)


def test_a_gallery_that_cannot_be_counted_is_listed_without_a_count(milvus_uri, collection_name):
    client = connect(milvus_uri)
    names = [f"{collection_name}_a", f"{collection_name}_b"]
    try:
        for name in names:
            Galleries(client, name).open(CollectionInfo("model-a", 8, 0.5), create=True)
        _unloadable(client, names[1])
        listed = {found.gallery: found.faces for found in gallery_admin.summaries(client)[0]}
        assert listed[names[0]] == 0 and listed[names[1]] is None
        # a listing of nothing but uncountable galleries is the store's outage, and says so
        with pytest.raises(Unavailable):
            gallery_admin.summaries(client, keep=lambda name: name == names[1])
    finally:
        for name in names:  # the session's server is shared: its other tests list every gallery on it
            collections = Galleries(client, name).collections()
            client.drop_alias(name)
            for collection in collections:
                client.drop_collection(collection.name)
        assert not [n for n in client.list_collections() if n.startswith(collection_name)]
        client.close()


def test_one_request_at_a_time_per_gallery_and_no_lock_outlives_its_requests():
    """A service that makes and erases thousands of galleries keeps no lock of theirs once their requests end."""
    import threading
    import time

    inside, most, guard = 0, 0, threading.Lock()

    def request(gallery: str) -> None:
        nonlocal inside, most
        with gallery_admin._one_at_a_time(gallery):
            if gallery == "same":
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.005)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=request, args=(name,)) for name in ["same"] * 8 + [f"g{i}" for i in range(50)]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1 and gallery_admin._TURNS == {}
