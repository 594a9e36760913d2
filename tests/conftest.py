"""Shared fixtures: a real local Ray, real Milvus Lite files, tiny models, and ../shared when it is there."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers import pin_port
from tests.ray_cluster import RAY_CLUSTER


def _scratch_dir(variable: str, prefix: str) -> None:
    """Point `variable` at a temporary directory removed when the test run ends (unless the caller set it)."""
    if variable not in os.environ:
        os.environ[variable] = directory = tempfile.mkdtemp(prefix=prefix)
        atexit.register(shutil.rmtree, directory, ignore_errors=True)


# the API's audit trail (jobs/audit.py) defaults to beside a Lite file or ./arcmatch-audit: tests keep theirs in
# a scratch directory unless they say where
_scratch_dir("ARCMATCH_AUDIT_DIR", "arcmatch-test-audit-")
# and the face archive (default ./arcmatch-archive for a server) too; most tests get one of their own below
_scratch_dir("ARCMATCH_ARCHIVE_URI", "arcmatch-test-archive-")
# Ray Train's controller polls its workers every 2 s by default: a two-epoch run of the tiny model then waits more
# than it trains. Read by the controller actor, so set before the tests' Ray starts.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# a fresh Ray's GCS gets 30 s to publish its port, and on 2 cores with the suite's other Rays, servers and clusters
# starting at the same moment a local Ray has run out of it (ray_local then starts it again); the nodes of
# tests/ray_cluster.py inherit it
os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "60")
# Ray runs its task and actor processes at nice 15 (its default, for a node shared with other work). In the suite
# every other process (the other tests, their servers, Ray's own daemons) runs at 0, so on 2 saturated cores the
# work a Ray test waits on got a sliver of a core: the node-fault tests took 4-6 times as long as alone, and the
# suite as a whole waited on them. At 0 the tests share the cores alike; every Ray the tests start (ray_local, the
# CLI's subprocesses, the nodes of tests/ray_cluster.py) inherits it
os.environ.setdefault("RAY_worker_niceness", "0")
# gRPC's C core writes the server's keepalive complaints ("too_many_pings") straight to stderr, past pytest's capture
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _archive_apart(tmp_path, monkeypatch):
    """Each test's face archive in its own temporary directory: never in the checkout (the default for a Milvus
    server is ./arcmatch-archive), never shared between tests that use the same collection name."""
    monkeypatch.setenv("ARCMATCH_ARCHIVE_URI", str(tmp_path / "archive"))


@pytest.fixture(scope="session")
def ray_local():
    """The test process's local Ray, started again (up to STARTS times in all) when its GCS never published its
    port: twice in a day's fresh-clone runs a GCS started beside the suite's other Rays wrote not even its log
    files within the wait, and every test of that process failed at set-up. A start, not a test, is repeated."""
    import warnings

    import ray

    from common.errors import Unavailable
    from jobs.runtime import init_ray
    from tests.ray_cluster import STARTS

    for attempt in range(STARTS):
        try:
            init_ray(num_cpus=4)  # logical CPUs: two training workers plus Ray Data's decode tasks beside them
            break
        except Unavailable as exc:
            if "gcs_server_port" not in str(exc) or attempt == STARTS - 1:
                raise
            warnings.warn(f"the local Ray did not start, starting it again: {exc}", stacklevel=1)
            ray.shutdown()
    yield ray
    ray.shutdown()


@pytest.fixture
def milvus_lite(tmp_path):
    from indexer.store import connect

    client = connect(str(tmp_path / "faces.db"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus 2.3 standalone server (PyPI package `milvus`) on loopback, for the whole session. Its port is
    pinned so that a restart (tests marked `disruptive`) brings it back where the clients look for it. One at a
    time: the embedded etcd's peer port is fixed, so a second server on the machine cannot start."""
    milvus = pytest.importorskip("milvus", reason="the `milvus` server package is not installed (pip install milvus)")
    server = milvus.MilvusServer()
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
    # after a restart the server serves again once its old sessions expire: ~24 s at its default TTL of 30 s, ~4 s
    # at 10 (docs/BENCHMARKS.md); the disruptive tests restart it twice
    server.config.set("common.session.ttl", 10)
    server.start()
    pin_port(server)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def milvus_server_uri(milvus_server):
    return f"http://127.0.0.1:{milvus_server.listen_port}"


SERVER_ID = "[server"  # how a test of the Milvus server is known by its id alone (see the scheduler below)


def pytest_itemcollected(item):
    """A test that uses the Milvus server says so in its id (a `server` parameter), so that xdist's controller, which
    sees ids only, can keep every such test in one process."""
    if "milvus_server" in getattr(item, "fixturenames", ()) and SERVER_ID not in item.nodeid:
        raise pytest.UsageError(f"{item.nodeid} uses the Milvus server: give it a 'server' parameter "
                                "(parametrize 'store' with ['server'], or mark it stores('server'))")


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs three processes (pytest-xdist): the suite mostly waits on Ray, servers and subprocesses. Every
    test of the Milvus server runs in one of them, in collection order: only one server can start on a machine (its
    embedded etcd's peer port is fixed), and the tests that stop it come last. Every other test stays with its
    module, whose fixtures it shares (a module's live API, its Prometheus and the traffic it saw)."""
    from xdist.scheduler import LoadScopeScheduling

    # the order pytest_collection_modifyitems gives, not xdist's (most tests first: the shared cluster's nine came
    # after a hundred quick ones, started a third of the way in, and the suite waited on it at the end)
    config.option.loadscopereorder = False

    class OneServer(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if SERVER_ID in nodeid:
                return "milvus-server"
            module = nodeid.split("::", 1)[0]
            return "ray-cluster" if module in RAY_CLUSTER else module

        def _reschedule(self, node) -> None:
            """xdist queues the next module on a process with two tests left; behind the server's last tests
            (minutes long) it waited while the other processes ran dry, so the server's process gets its next
            module with one test left (a process runs its last test only once another arrives or it is told to
            stop, so not with none)."""
            server = self.assigned_work[node].get("milvus-server", {})
            if sum(not done for done in server.values()) > 1:
                return
            super()._reschedule(node)

    return OneServer(config, log)


EARLY = RAY_CLUSTER


def pytest_collection_modifyitems(items):
    """Tests that stop the shared Milvus server run last, so that no other test meets its outage (under xdist: last
    of the server's tests, which one process runs). The Ray cluster of `arcmatch submit`'s and the node faults'
    tests starts first, while the machine is quiet: `ray start` gives its raylet a fixed 30 s to register (not
    configurable), and with the suite's heaviest tests on both cores it has taken longer. A node-fault test of the
    Milvus server (with a cluster of its own, in the server's test process) comes last of that process's tests that
    leave the server up, when the shared cluster's tests are likely done: two clusters at once overload 2 cores.
    Then the modules with slow tests, and the quick ones last: under xdist, modules are handed out in this order,
    and quick ones at the end keep every process busy until the end."""
    slow = {item.nodeid.split("::", 1)[0] for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: (item.get_closest_marker("disruptive") is not None,
                                 item.nodeid.startswith(EARLY) and SERVER_ID in item.nodeid,
                                 not item.nodeid.startswith(EARLY),
                                 item.nodeid.split("::", 1)[0] not in slow))


def pytest_generate_tests(metafunc):
    """A test that takes `milvus_uri` runs on the stores its `stores` mark names: both (a Milvus Lite file and the
    real server) for the store's own contract, the default; one for everything built on the store, which the
    contract already holds on both (each module says which, and why)."""
    if "milvus_uri" in metafunc.fixturenames:
        mark = metafunc.definition.get_closest_marker("stores")
        metafunc.parametrize("milvus_uri", mark.args if mark else ("lite", "server"), indirect=True)


@pytest.fixture
def milvus_uri(request, tmp_path):
    """A Milvus Lite file of the test's own, or the session's real server (see pytest_generate_tests)."""
    if request.param == "lite":
        return str(tmp_path / "faces.db")
    return request.getfixturevalue("milvus_server_uri")


@pytest.fixture
def collection_name(request) -> str:
    """Unique per test, because the server outlives a test; dropped afterwards."""
    import re

    name = "t_" + re.sub(r"_+", "_", re.sub(r"\W", "_", request.node.name))[-60:].strip("_")
    yield name
    uri = request.getfixturevalue("milvus_uri") if "milvus_uri" in request.fixturenames else None
    if uri is not None:
        from indexer.galleries import Galleries
        from indexer.store import connect

        client = connect(uri)
        Galleries(client, name).drop_all()  # the alias and every model's collection of it
        if name in client.list_collections():
            client.drop_collection(name)
        client.close()


@pytest.fixture
def new_collection(milvus_uri, collection_name):
    """A factory: the test's empty collection on the store under test, for a model of `dim` and `threshold`."""
    from indexer.store import CollectionInfo, FaceIndex, connect

    clients = []

    def make(dim: int, threshold: float | None, index_type: str = "FLAT"):
        clients.append(connect(milvus_uri))
        index = FaceIndex(clients[-1], collection_name)
        index.ensure(CollectionInfo("model-a", dim, threshold), index_type=index_type)
        return index

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def tiny_spec():
    from embedder.spec import ModelSpec

    return ModelSpec(backbone="test_resnet", embedding_size=16, input_size=(32, 32))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The suite's tiny trained face model (64-d, 32x32; tests/fixtures/train_tiny_model.py) with its calibration:
    it tells the tests' synthetic people apart (same person >= 0.55 > different people, but for about one pair of
    people in 10,000), so decisions are tested on other photos of a person and conflict checks stay on."""
    from embedder.checkpoint import load_embedder, save_embedder
    from embedder.layout import CALIBRATION_FILE
    from tests.fixtures.train_tiny_model import FIXTURE

    directory = tmp_path_factory.mktemp("tiny-model")
    save_embedder(load_embedder(FIXTURE), directory)  # float32, its version stamped from those weights
    shutil.copy(FIXTURE / CALIBRATION_FILE, directory / CALIBRATION_FILE)
    return directory


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory):
    """Another model version, calibrated at 0.6: a model upgrade. The tiny model with the dimensions of its output
    shuffled: it tells the same people apart, yet its vectors mean nothing to the tiny model's gallery, as another
    model's would not."""
    import torch

    from embedder.checkpoint import Calibration, load_embedder, save_embedder
    from tests.fixtures.train_tiny_model import FIXTURE

    model = load_embedder(FIXTURE)
    order = torch.randperm(model.spec.embedding_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for name, tensor in model.neck.state_dict().items():
            if name.startswith(("fc.", "bn_out.")) and tensor.ndim >= 1:
                tensor.copy_(tensor[order])
    directory = tmp_path_factory.mktemp("other-model")
    save_embedder(model, directory)
    Calibration(threshold=0.6, target_far=1e-3, measured_far=1e-3, tar=0.9, pairs=100).save(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_onnx_dir(tmp_path_factory, tiny_model_dir):
    """The tiny checkpoint exported as an ONNX model directory (same version, same calibration)."""
    from embedder.checkpoint import load_embedder
    from embedder.export import export_onnx

    directory = tmp_path_factory.mktemp("tiny-onnx")
    export_onnx(load_embedder(tiny_model_dir), directory, calibration_from=tiny_model_dir)
    return directory


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"real face data not found at {data} (../shared is absent on a fresh machine)")
    return data


YUNET_DEFAULT = "face_detection_yunet_2026may.onnx"


@pytest.fixture(scope="session")
def shared_models() -> Path:
    models = SHARED / "models"
    if not (models / "yunet").is_dir():
        pytest.skip(f"face models not found at {models} (../shared is absent on a fresh machine)")
    return models


@pytest.fixture(scope="session")
def yunet(shared_models):
    """The documented default detector, one thread (tests run beside each other)."""
    from embedder.detect import YuNetDetector

    return YuNetDetector(shared_models / "yunet" / YUNET_DEFAULT, threads=1)


@pytest.fixture(scope="session")
def lfw_image(shared_data):
    """lfw_image(name, n) -> the (250, 250, 3) uint8 RGB array of LFW-gray's <name>_<n>.jpg."""
    from tests.helpers import read_lfw

    return lambda name, number=1: read_lfw(shared_data, name, number)


@pytest.fixture(scope="session")
def mobilefacenet_aligned(shared_models, tmp_path_factory) -> Path:
    """The shared MobileFaceNet as an ONNX model directory that wants five-point aligned faces (the ONNX file
    linked, never copied), calibrated at cosine 0.35: on LFW-gray pairs aligned by YuNet the 99th percentile of
    different people's scores is 0.28 and the 5th of the same person's 0.33."""
    from tests.helpers import aligned_model_dir

    if not (shared_models / "mobilefacenet" / "MobileFaceNet.onnx").is_file():
        pytest.skip(f"MobileFaceNet not found in {shared_models} (../shared is absent on a fresh machine)")
    return aligned_model_dir(tmp_path_factory.mktemp("mobilefacenet-aligned"), shared_models, threshold=0.35)


@pytest.fixture(scope="session")
def mobilefacenet_box(mobilefacenet_aligned, shared_models, tmp_path_factory) -> Path:
    """The same weights behind the fixed crop box of pre-aligned LFW images (alignment none): another model
    version, the one a gallery made before detection existed was embedded with. Calibrated at 0.37."""
    from tests.helpers import aligned_model_dir

    return aligned_model_dir(tmp_path_factory.mktemp("mobilefacenet-box"), shared_models, threshold=0.37,
                             spec="mobilefacenet")
