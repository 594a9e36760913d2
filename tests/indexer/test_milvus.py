"""The one map of Milvus's errors: every pymilvus exception class and every code arcmatch relies on becomes one of
the indexer's errors; retries follow the code; and what the real stores raise lands where the map says."""

import inspect

import grpc
import numpy as np
import pymilvus
import pytest
from pymilvus import exceptions as milvus_errors

from indexer.errors import BackendUnavailable, CollectionNotFound, IndexerError, InvalidValue
from indexer.milvus import (
    CLASSES,
    FAILED,
    MISSING,
    NO_ANSWER,
    NOT_LOADED,
    REFUSED,
    UNREACHABLE,
    Milvus,
    Property,
    connect,
    trouble,
)
from indexer.store import CollectionInfo, FaceIndex
from tests.helpers import free_port

PYMILVUS_CLASSES = sorted((c for _, c in inspect.getmembers(milvus_errors, inspect.isclass)
                           if issubclass(c, milvus_errors.MilvusException)), key=lambda c: c.__name__)


class RpcError(grpc.RpcError):
    """What grpc raises (its own classes are private): an RpcError with a status code."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@pytest.mark.parametrize("cls", PYMILVUS_CLASSES, ids=lambda c: c.__name__)
def test_every_pymilvus_exception_maps_to_one_of_ours(cls):
    assert cls.__name__ in CLASSES, f"pymilvus has a new exception class {cls.__name__}: decide what it means"
    found = trouble(cls(message="anything"))
    assert found is not None and issubclass(found.error, IndexerError)
    if CLASSES[cls.__name__] is None:  # carries a store's status: its code decides
        assert trouble(cls(code=100, message="x")) is MISSING


@pytest.mark.parametrize("code, expected", [
    (100, MISSING), (1600, MISSING), (101, NOT_LOADED), (103, NOT_LOADED), (2, UNREACHABLE), (6, REFUSED),
    (1100, REFUSED), (3, FAILED), (65536, FAILED), (milvus_errors.ErrorCode.RATE_LIMIT, FAILED),
    (grpc.StatusCode.UNAVAILABLE, UNREACHABLE), (grpc.StatusCode.DEADLINE_EXCEEDED, NO_ANSWER),
])
def test_a_store_status_maps_by_its_code_not_its_text(code, expected):
    misleading = "collection not loaded: connection refused, timeout, not found"  # the words the map never reads
    assert trouble(pymilvus.MilvusException(code=code, message=misleading)) is expected


@pytest.mark.parametrize("text, expected", [
    ("[search] Retry timeout: 2s, message=proxy TaskCondition context Done", NO_ANSWER),
    ("failed to create query plan: cannot parse expression: a ===", REFUSED), ("something else", FAILED)])
def test_only_an_uncoded_status_is_read_for_words(text, expected):
    assert trouble(pymilvus.MilvusException(code=65535, message=text)) is expected
    assert trouble(pymilvus.MilvusException(code=1100, message=text)) is REFUSED


@pytest.mark.parametrize("status, expected", [
    (grpc.StatusCode.UNAVAILABLE, UNREACHABLE), (grpc.StatusCode.DEADLINE_EXCEEDED, NO_ANSWER),
    (grpc.StatusCode.INVALID_ARGUMENT, REFUSED), (grpc.StatusCode.NOT_FOUND, MISSING),
    (grpc.StatusCode.INTERNAL, FAILED), (grpc.StatusCode.CANCELLED, FAILED),
])
def test_grpc_errors_map_by_status_code(status, expected):
    assert trouble(RpcError(status)) is expected


def test_a_channel_not_ready_in_time_is_no_answer_and_other_errors_are_not_ours():
    assert trouble(grpc.FutureTimeoutError()) is NO_ANSWER
    assert trouble(KeyError("id")) is None


class Flaky:
    """A client whose search fails with `error` the first `times` calls."""

    def __init__(self, error: BaseException, times: int) -> None:
        self.error, self.times, self.calls, self.loads, self.closed = error, times, 0, 0, False

    def search(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return [["hit"]]

    def load_collection(self, name, timeout=None):
        self.loads += 1

    def close(self):
        self.closed = True


@pytest.mark.parametrize("error, ours", [
    (pymilvus.MilvusException(code=6, message="bad filter"), InvalidValue),
    (milvus_errors.ParamError(message="limit 0"), InvalidValue),
    (pymilvus.MilvusException(code=100, message="gone"), CollectionNotFound),
])
def test_what_retrying_cannot_mend_fails_at_once(error, ours):
    client = Flaky(error, times=10)
    with pytest.raises(ours) as raised:
        Milvus(client, retry_s=5.0)("search", "faces")
    assert client.calls == 1
    assert "gone" not in str(raised.value) and "limit" not in str(raised.value)  # the foreign text stays in the log


def test_not_loaded_loads_again_then_retries():
    client = Flaky(pymilvus.MilvusException(code=101, message="released"), times=2)
    assert Milvus(client, retry_s=5.0, loads="faces")("search", "faces") == [["hit"]]
    assert client.calls == 3 and client.loads == 2


def test_unreachable_renews_the_client_and_gives_up_after_retry_s():
    stale = Flaky(RpcError(grpc.StatusCode.UNAVAILABLE), times=100)
    fresh = Flaky(RpcError(grpc.StatusCode.UNAVAILABLE), times=1)
    milvus = Milvus(stale, retry_s=5.0, reconnect=lambda: fresh)
    assert milvus("search", "faces") == [["hit"]]
    # the client it was given may serve others (the API's galleries share it): left open, to recover by itself
    assert milvus.client is fresh and not stale.closed
    fresher = Flaky(RpcError(grpc.StatusCode.UNAVAILABLE), times=0)
    milvus._reconnect, milvus._renewed_at = (lambda: fresher), -1.0
    fresh.times, fresh.calls = 100, 0
    assert milvus("search", "faces") == [["hit"]]
    assert milvus.client is fresher and fresh.closed  # one it made itself is closed when replaced
    down = Flaky(RpcError(grpc.StatusCode.UNAVAILABLE), times=100)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        Milvus(down, retry_s=0.5)("search", "faces")
    assert 2 <= down.calls <= 6


def test_a_port_nobody_listens_on_is_unreachable():
    with pytest.raises(pymilvus.MilvusException) as raised:
        pymilvus.MilvusClient(uri=f"http://127.0.0.1:{free_port()}", timeout=2, dedicated=True)
    assert trouble(raised.value) is UNREACHABLE


@pytest.fixture
def faces(milvus_uri, collection_name):
    client = connect(milvus_uri)
    index = FaceIndex(client, collection_name)
    index.ensure(CollectionInfo("model-a", 4, 0.5), index_type="FLAT")
    yield index
    client.close()


def test_what_the_real_store_raises_lands_where_the_map_says(faces):
    milvus = Milvus(faces.client, retry_s=0.5)
    with pytest.raises(CollectionNotFound):
        milvus("describe_collection", "nothing_here")
    with pytest.raises(CollectionNotFound):
        milvus("search", "nothing_here", data=[[1.0, 0, 0, 0]], limit=1)
    with pytest.raises(InvalidValue):  # a filter the store cannot parse
        milvus("query", faces.collection, filter="identity ===", limit=1)
    with pytest.raises(InvalidValue):  # refused by pymilvus itself
        milvus("search", faces.collection, data=[[1.0, 0, 0, 0]], limit=0)
    faces.client.release_collection(faces.collection)
    with pytest.raises(BackendUnavailable, match="not loaded"):  # nobody to load it again
        Milvus(faces.client, retry_s=0)("query", faces.collection, filter="id >= 0", limit=1)
    patient = FaceIndex(faces.client, faces.collection, retry_s=30)  # the server's load takes a few seconds
    assert patient.search(np.eye(4, dtype=np.float32)[:1], k=1) == [[]]  # a FaceIndex loads it again


def test_properties_are_read_and_written_through_one_table_by_collection_or_alias(faces):
    faces.set_properties({Property.DISTINCT: "[]", Property.MIGRATION: '{"source": "a"}'})
    assert faces.properties()[Property.MIGRATION] == '{"source": "a"}'
    assert CollectionInfo.from_json(faces.properties()[Property.INFO]).dim == 4
    alias = f"{faces.collection}_alias"
    faces.client.create_alias(faces.collection, alias)
    try:
        assert faces.milvus.properties(alias)[Property.DISTINCT] == "[]"
    finally:
        faces.client.drop_alias(alias)


def test_pymilvus_does_not_repeat_a_failure_arcmatch_logs_itself():
    import logging

    from indexer.milvus import _SaidByUs, library

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("pymilvus.decorators", logging.ERROR, __file__, 1, message, (), None)

    said = _SaidByUs()
    assert not said.filter(record("RPC error: [search], <MilvusException: (code=2)>, <elapsed:3.6ms>"))
    assert not said.filter(record("Connection recovery failed"))
    assert said.filter(record("the collection's schema changed"))  # anything else pymilvus says still passes
    library()
    assert all(any(isinstance(f, _SaidByUs) for f in h.filters) for h in logging.getLogger("pymilvus").handlers)
