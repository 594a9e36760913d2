"""A Ray cluster of several nodes on this one machine, for the node-fault tests and bench/node_faults.py: a head
and worker nodes, each `ray start --block` (its own raylet, object store and workers) in a process group of its
own. A machine's death is SIGKILL to every process the node started: its group and its descendants (Ray gives
some worker processes a process group of their own).

Every node gets ports of its own (another Ray on the machine, a test process's local one, holds the defaults) and
the head a short temp dir (Ray's socket paths under it must fit AF_UNIX's 107 bytes). Ray 2.60 turns token
authentication on for `ray start --head`: every node and every driver carries the token (AUTH).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import listen_port

RAY = Path(sys.executable).parent / "ray"
# the modules that share one cluster (tests/jobs/pipelines/conftest.py): one test process runs them, one after the
# other (tests/conftest.py)
RAY_CLUSTER = ("tests/jobs/pipelines/test_submit.py", "tests/jobs/pipelines/test_node_faults.py")
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
# for the suite (Cluster(quick_checks=True)): a dead node is known dead after this many failed checks this far
# apart (Ray's defaults, which the benches keep: 5 of every 3 s, 15 s). A killed node's port refuses at once, so
# the checks fail fast and its work goes elsewhere 10 s sooner; a live node fails one only by not answering in 10 s
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
STARTED = "Ray runtime started"
STARTUP_TIMEOUT = "timed out during startup"  # `ray start`'s words when its raylet did not register within 30 s
# ... and when the head's GCS did not answer a joining node in time (a fresh-clone run, the suite's start on both
# cores): both are a loaded machine's, and a start again is what an operator would do
STARTUP_TIMEOUTS = (STARTUP_TIMEOUT, "Failed to get node info b'RPC error: Deadline Exceeded'")
# starts of a node before giving up: Ray's 30 s is fixed, and a fresh-clone run of the suite saw it run out twice
# in a row (a worker node of the clustering fault test, started while the suite's Ray Train test ran beside it),
# and another three times (the ingest-and-reembed fault test's replacement node, load average 20 on 2 cores)
STARTS = 5


def cluster_turn():
    """An open lock file, held until closed: one cluster of these tests at a time on the machine, across the test
    processes of one run (xdist's run id names the lock). Two at once (the shared cluster's tests and a node-fault
    test of the Milvus server with a cluster of its own) overload 2 cores: in a fresh-clone run each of their tests
    took 2-3 times as long as in a run where they happened not to meet."""
    import fcntl

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
    handle = (Path(tempfile.gettempdir()) / f"arcmatch-test-clusters-{run}.lock").open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


class Node(subprocess.Popen):
    name: str
    log: Path


class Cluster:
    """`Cluster(scratch, workers=2)`: a head (`head_cpus`) and that many one-CPU worker nodes; `add_worker()` for
    another, `kill(node)` is its death, `stop()` the end of them all (also of the ones started when a later one
    failed to start). `dashboard=False`: none on the head (no Jobs API: nothing is submitted), a lighter start."""

    def __init__(self, scratch: Path, workers: int = 0, head_cpus: int = 0, quick_checks: bool = False,
                 dashboard: bool = True) -> None:
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self.checks = HEALTH_CHECKS if quick_checks else {}
        self.workers: list[Node] = []
        self.temps: list[Path] = []
        self.started = 0

        def head() -> list[str]:
            """The head's arguments, with ports and a temp dir of their own on every try: a try that timed out
            may leave its GCS port held or its session half-written, and the next must not meet either."""
            self.temp = Path(tempfile.mkdtemp(prefix="rc-"))
            self.temps.append(self.temp)
            self.port, self.dashboard = listen_port(), listen_port()
            self.address = f"127.0.0.1:{self.port}"
            self.jobs_api = f"http://127.0.0.1:{self.dashboard}"
            return ["--head", f"--port={self.port}", f"--num-cpus={head_cpus}", f"--temp-dir={self.temp}",
                    f"--include-dashboard={str(dashboard).lower()}", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={self.dashboard}"]

        self.head = self._start(head, "head")
        try:
            for _ in range(workers):
                self.add_worker()
        except BaseException:
            self.stop()
            raise

    def _start(self, args: Callable[[], list[str]], name: str) -> Node:
        """A node, up once `ray start` says so; started again (up to STARTS times in all, `args()` each time)
        when Ray gave up on its raylet's registration (a fixed 30 s in ray/_private/node.py, which a loaded
        machine can exceed)."""
        for attempt in range(STARTS):
            node = self._spawn(args(), name)
            text = self._wait(node)
            if STARTED in text:
                return node
            self._stop(node)
            if not any(timeout in text for timeout in STARTUP_TIMEOUTS) or attempt == STARTS - 1:
                raise RuntimeError(f"Ray node {name} did not start (exit {node.poll()}): {text[-3000:]}\n"
                                   f"{_session_logs(self.temps[-1])}")
        raise AssertionError("unreachable")

    def _spawn(self, args: list[str], name: str) -> Node:
        ports = [f"--dashboard-agent-listen-port={listen_port()}", f"--dashboard-agent-grpc-port={listen_port()}",
                 f"--metrics-export-port={listen_port()}", f"--runtime-env-agent-port={listen_port()}"]
        if "--head" in args:
            ports.append(f"--ray-client-server-port={listen_port()}")
        log = self.scratch / f"{name}.log"
        # the cluster's `python` is the one with arcmatch's dependencies, as in its image
        env = {**os.environ, **AUTH, "PATH": f"{RAY.parent}:{os.environ.get('PATH', '')}", **self.checks}
        with log.open("w") as out:
            node = subprocess.Popen([str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", *args, *ports],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        node.__class__ = Node
        node.name, node.log = name, log
        return node

    @staticmethod
    def _wait(node: Node, timeout_s: float = 180) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = node.log.read_text(errors="replace")
            if STARTED in text or node.poll() is not None or time.monotonic() > deadline:
                return text
            time.sleep(0.3)

    def add_worker(self, cpus: int = 1) -> Node:
        self.started += 1
        name = f"worker{self.started}"
        # a temp dir of its own, as a machine has: nodes sharing one would share runtime_resources/, and one node's
        # clean-up of a job's working_dir would delete it under another node's processes (the job's driver)
        def worker_args() -> list[str]:
            temp = Path(tempfile.mkdtemp(prefix=f"rc-{self.started}-"))
            self.temps.append(temp)
            return [f"--address={self.address}", f"--num-cpus={cpus}", f"--node-name={name}", f"--temp-dir={temp}"]

        worker = self._start(worker_args, name)
        self.workers.append(worker)
        return worker

    def hosting(self, marker: str) -> Node | None:
        """A worker node one of whose processes has `marker` in its command line (Ray names an actor's process
        after its class: `ray::MapWorker(MapBatches(EmbedBatch))`), read from /proc: instant, no Ray call."""
        parents = _parents()
        for pid in parents:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in command:
                for worker in self.workers:
                    if _descends(pid, worker.pid, parents):
                        return worker
        return None

    def kill(self, node: Node) -> None:
        """A machine's death: SIGKILL to all the node's processes (raylet, its workers, its store)."""
        self._stop(node)
        self.workers.remove(node)

    @staticmethod
    def _stop(node: Node) -> None:
        """Every process of the node stopped (SIGSTOP), then killed: all at once, as a machine dies, where killing
        one after the other would let a survivor (the node's agent) report the raylet's death to the drivers."""
        parents = _parents()
        doomed = [p for p in parents if _descends(p, node.pid, parents)]
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in doomed:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.wait()

    def logs(self) -> str:
        """The end of the nodes' own logs, for a failure's message."""
        tails = [f"--- {p.name}\n{p.read_text(errors='replace')[-800:]}" for p in sorted(self.scratch.glob("*.log"))]
        return "\n".join([*tails, _session_logs(self.temp)])

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            self._stop(node)
        for temp in self.temps:
            shutil.rmtree(temp, ignore_errors=True)


def _session_logs(temp: Path) -> str:
    """The end of a node's raylet and GCS logs (a worker has no GCS), for a failure's message: why a raylet did
    not register is written there, not in `ray start`'s output."""
    tails = []
    for name in ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err"):
        for path in temp.glob(f"session_latest/logs/{name}"):
            tails.append(f"--- {name}\n" + path.read_text(errors="replace")[-1500:])
    return "\n".join(tails)


def _parents() -> dict[int, int]:
    """{pid: parent pid} of every process of the machine, from /proc."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                found[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return found


def _descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parents.get(pid, 0)
    return False
