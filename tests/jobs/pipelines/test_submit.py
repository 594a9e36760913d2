"""`arcmatch submit` and `arcmatch jobs` against a real Ray head started on loopback (`ray start --head`)."""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port

TOKEN = secrets.token_hex(16)  # Ray's token authentication, as a cluster would run it
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    ray = Path(sys.executable).parent / "ray"
    # every port of its own: another Ray on this machine (the tests' local one) holds the defaults
    port, dashboard, agent, agent_grpc, metrics, runtime_env, client = (free_port() for _ in range(7))
    temp = tmp_path_factory.mktemp("ray-head")
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=1",
                             "--include-dashboard=true", f"--temp-dir={temp}",
                             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                             f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                             f"--ray-client-server-port={client}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            # the cluster's `python` is the one with arcmatch's dependencies, as in its image
                            env={**os.environ, **AUTH, "PATH": f"{ray.parent}:{os.environ['PATH']}"})
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while True:
        probe = subprocess.run([sys.executable, "-c", f"from ray.job_submission import JobSubmissionClient as C; "
                                f"C({address!r}).list_jobs()"], capture_output=True, env={**os.environ, **AUTH})
        if probe.returncode == 0:
            break
        else:
            if time.time() > deadline or head.poll() is not None:
                os.killpg(head.pid, signal.SIGTERM)
                pytest.fail("the Ray head did not come up")
            time.sleep(1)
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:  # Ray's graceful stop takes half a minute; the head's processes are its group
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)


def cli(*args, address):
    env = {**os.environ, **AUTH, "RAY_ADDRESS": address}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.slow
def test_submitted_job_runs_on_the_cluster_and_reports_its_status(ray_head, tmp_path):
    out = tmp_path / "synthetic"
    done = cli("submit", "prepare", "--synthetic", str(out), "--identities", "2", "--images", "2", "--size", "32",
               address=ray_head)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "wrote 4 images" in done.stdout and "SUCCEEDED" in done.stdout
    assert len(list(out.rglob("*.png"))) == 4  # the cluster shares this machine's filesystem

    failed = cli("submit", "eval", "--model", str(tmp_path / "no-model"), "--data", str(out), address=ray_head)
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    assert "does not exist" in failed.stdout  # the job's own one-line error, from its logs

    listed = cli("jobs", "list", address=ray_head)
    assert listed.returncode == 0 and listed.stdout.count("jobs.cli") >= 2
    job_id = listed.stdout.split("\t")[0]
    assert cli("jobs", "status", job_id, address=ray_head).stdout.strip() in ("SUCCEEDED", "FAILED")
