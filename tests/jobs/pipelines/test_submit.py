"""`arcmatch submit` and `arcmatch jobs` against a real Ray head started on loopback (`ray start --head`)."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import listen_port

TOKEN = secrets.token_hex(16)  # Ray's token authentication, as a cluster would run it
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


STARTUP_TIMEOUT = "timed out during startup"  # `ray start`'s own words when its raylet did not register in time


def _start_head() -> tuple[subprocess.Popen, str, Path]:
    """`ray start --head --block` with ports and a temp dir of its own; returns once the node is up (the command
    said so) and its Jobs API answers, or once the command has exited."""
    ray = Path(sys.executable).parent / "ray"
    # every port of its own: another Ray on this machine (the tests' local one) holds the defaults
    # (bound by the head seconds later: outside the range outgoing connections take ports from, see listen_port)
    ports: list[int] = []
    while len(ports) < 7:
        ports += [found] if (found := listen_port()) not in ports else []
    port, dashboard, agent, agent_grpc, metrics, runtime_env, client = ports
    # a short path: Ray's socket paths under it must stay within AF_UNIX's 107 bytes (pytest's own can be long)
    temp = Path(tempfile.mkdtemp(prefix="rh-"))
    log = temp / "head.log"
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=1",
                             "--include-dashboard=true", f"--temp-dir={temp}",
                             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                             f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                             f"--ray-client-server-port={client}"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            # the cluster's `python` is the one with arcmatch's dependencies, as in its image
                            env={**os.environ, **AUTH, "PATH": f"{ray.parent}:{os.environ['PATH']}"})
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while head.poll() is None and time.time() < deadline:
        # the node first: the dashboard answers before `ray start` knows its raylet registered, and gives up after
        if "Ray runtime started" in log.read_text(errors="replace"):
            probe = subprocess.run([sys.executable, "-c", f"from ray.job_submission import JobSubmissionClient as "
                                    f"C; C({address!r}).list_jobs()"], capture_output=True, env={**os.environ, **AUTH})
            if probe.returncode == 0:
                break
        time.sleep(1)
    return head, address, temp


@pytest.fixture(scope="module")
def ray_head():
    head, address, temp = _start_head()
    if head.poll() is not None and STARTUP_TIMEOUT in (temp / "head.log").read_text(errors="replace"):
        # `ray start` waits a fixed 30 s for its raylet to register (ray/_private/node.py, not configurable); with
        # the rest of the suite on both cores the raylet's agents can take longer to start, and the command then
        # stops the node: starting it once more is the one remedy Ray leaves (the tests themselves run once).
        shutil.rmtree(temp, ignore_errors=True)
        head, address, temp = _start_head()
    if head.poll() is not None or "Ray runtime started" not in (temp / "head.log").read_text(errors="replace"):
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
        pytest.fail(f"the Ray head did not come up (exit {head.poll()}): "
                    f"{(temp / 'head.log').read_text(errors='replace')[-3000:]}")
    yield HeadAddress(address, temp)
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:  # Ray's graceful stop takes half a minute; the head's processes are its group
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)
    shutil.rmtree(temp, ignore_errors=True)


class HeadAddress(str):
    """The head's Jobs API address, which also knows where the head keeps its logs."""

    def __new__(cls, address: str, temp: Path):
        made = super().__new__(cls, address)
        made.temp = temp
        return made

    def logs(self) -> str:
        """The end of the head's own logs: what a failed submission's message needs to be understood."""
        tails = []
        for name in ("dashboard.log", "gcs_server.out", "raylet.out", "dashboard_agent.log"):
            for path in self.temp.glob(f"session_latest/logs/{name}"):
                tails.append(f"--- {name}\n" + path.read_text(errors="replace")[-1500:])
        head_log = self.temp / "head.log"
        if head_log.is_file():
            tails.append("--- ray start\n" + head_log.read_text(errors="replace")[-1000:])
        return "\n".join(tails)


def cli(*args, address, env=None):
    env = env if env is not None else {**os.environ, **AUTH}
    env = {**env, "RAY_ADDRESS": address}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_submitted_job_runs_on_the_cluster_and_reports_its_status(ray_head, tmp_path):
    out = tmp_path / "synthetic"
    done = cli("submit", "prepare", "--synthetic", str(out), "--identities", "2", "--images", "2", "--size", "32",
               address=ray_head)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:] + ray_head.logs()
    assert "wrote 4 images" in done.stdout and "SUCCEEDED" in done.stdout
    assert len(list(out.rglob("*.png"))) == 4  # the cluster shares this machine's filesystem

    failed = cli("submit", "eval", "--model", str(tmp_path / "no-model"), "--data", str(out), address=ray_head)
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    assert "does not exist" in failed.stdout  # the job's own one-line error, from its logs

    listed = cli("jobs", "list", address=ray_head)
    assert listed.returncode == 0 and listed.stdout.count("jobs.cli") >= 2
    job_id = listed.stdout.split("\t")[0]
    assert cli("jobs", "status", job_id, address=ray_head).stdout.strip() in ("SUCCEEDED", "FAILED")


@pytest.mark.slow
def test_a_newcomers_submission_finds_the_token_and_carries_the_settings(ray_head, tmp_path):
    """As a newcomer submits: the token where Ray keeps it and RAY_AUTH_MODE never said, settings in ARCMATCH_*
    variables (one of them a secret), a wrong token."""
    out = tmp_path / "synthetic"
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "ARCMATCH_"))}
    token_file = tmp_path / "auth_token"
    token_file.write_text(TOKEN)
    env = {**plain, "RAY_AUTH_TOKEN_PATH": str(token_file), "ARCMATCH_MODEL": str(tmp_path / "no-model"),
           "ARCMATCH_MILVUS_TOKEN": "root:secret"}
    made = cli("submit", "prepare", "--synthetic", str(out), "--identities", "2", "--images", "2", "--size", "32",
               address=ray_head, env=env)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:] + ray_head.logs()
    assert "with ARCMATCH_MODEL)" in made.stdout and "secret" not in made.stdout
    assert "not carried to the cluster (secrets: set them there): ARCMATCH_MILVUS_TOKEN" in made.stderr

    # the model comes from the submitter's ARCMATCH_MODEL: the job's one-line error names it
    failed = cli("submit", "eval", "--data", str(out), address=ray_head, env=env)
    assert failed.returncode == 1 and f"{tmp_path / 'no-model'}" in failed.stdout and "does not exist" in failed.stdout

    token_file.write_text("not-the-token")
    refused = cli("submit", "prepare", "--synthetic", str(out), address=ray_head, env=env)
    assert refused.returncode == 5, refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines()[-1].startswith("arcmatch submit: backend unavailable: the Ray cluster")
    assert "Traceback" not in refused.stderr


def test_a_job_that_died_for_the_clusters_python_says_what_to_do():
    from jobs.pipelines.submit import wrong_python

    died = ["Running entrypoint for job raysubmit_x: python -m jobs.cli ingest ...",
            "Traceback (most recent call last):", '  File "jobs/progress.py", line 17, in <module>',
            "ModuleNotFoundError: No module named 'tqdm'"]
    assert "cannot import 'tqdm'" in wrong_python(died) and "ray start" in wrong_python(died)
    assert "is not there" in wrong_python(["/bin/sh: 1: python: not found"])
    assert wrong_python(["arcmatch ingest: bad input: /data/x does not exist"]) is None
