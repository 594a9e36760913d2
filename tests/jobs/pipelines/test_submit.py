"""`arcmatch submit` and `arcmatch jobs` against a real Ray cluster started on loopback (`ray start --head`, two
worker nodes: tests/ray_cluster.py)."""

import os
import subprocess
import sys

import pytest

from tests.ray_cluster import AUTH

TOKEN = AUTH["RAY_AUTH_TOKEN"]  # Ray's token authentication, as a cluster would run it


@pytest.fixture
def ray_head(ray_cluster):
    return HeadAddress(ray_cluster)


class HeadAddress(str):
    """The head's Jobs API address, which also knows where the cluster keeps its logs."""

    def __new__(cls, cluster):
        made = super().__new__(cls, cluster.jobs_api)
        made.cluster = cluster
        return made

    def logs(self) -> str:
        """The end of the cluster's own logs: what a failed submission's message needs to be understood."""
        return self.cluster.logs()


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
    assert all(line.startswith("raysubmit_") for line in listed.stdout.splitlines())  # submitted jobs only
    job_id = listed.stdout.split("\t")[0]
    assert cli("jobs", "status", job_id, address=ray_head).stdout.strip() in ("SUCCEEDED", "FAILED")
    unknown = cli("jobs", "status", "raysubmit_nope", address=ray_head)  # one line, not found: not a traceback
    assert unknown.returncode == 4 and "no job 'raysubmit_nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


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


def test_relative_paths_that_the_jobs_copy_of_the_project_lacks_are_sent_absolute(tmp_path):
    from jobs.pipelines.submit import PROJECT, on_the_cluster

    (tmp_path / "photos").mkdir()
    (tmp_path / "model").mkdir()
    args = ["./photos", "--model=model/", "--gallery", "model", "--milvus", "./new.db", "/data/x", "a/b"]
    assert on_the_cluster(args, tmp_path) == [str(tmp_path / "photos"), f"--model={tmp_path / 'model'}",
                                              "--gallery", "model", "--milvus", str(tmp_path / "new.db"), "/data/x",
                                              "a/b"]
    # in the shipped copy: as given (the job starts there); left out of it (tests/): absolute
    assert on_the_cluster(["jobs/cli", "tests/fixtures"], PROJECT) == ["jobs/cli", str(PROJECT / "tests/fixtures")]


def test_a_job_that_died_for_the_clusters_python_says_what_to_do():
    from jobs.pipelines.submit import wrong_python

    died = ["Running entrypoint for job raysubmit_x: python -m jobs.cli ingest ...",
            "Traceback (most recent call last):", '  File "jobs/progress.py", line 17, in <module>',
            "ModuleNotFoundError: No module named 'tqdm'"]
    assert "cannot import 'tqdm'" in wrong_python(died) and "ray start" in wrong_python(died)
    assert "is not there" in wrong_python(["/bin/sh: 1: python: not found"])
    assert wrong_python(["arcmatch ingest: bad input: /data/x does not exist"]) is None


def test_the_entrypoint_in_a_python_without_the_dependencies_says_so_in_one_line(tmp_path):
    """The job's own side: `python -m jobs.cli` where nothing but the standard library imports (-S: no
    site-packages) ends with one line naming the module and what to do, and the submitter adds nothing to it."""
    import subprocess
    import sys
    from pathlib import Path

    from jobs.pipelines.submit import wrong_python

    root = Path(__file__).resolve().parents[3]
    as_job = {"PATH": "/usr/bin:/bin", "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}
    died = subprocess.run([sys.executable, "-S", "-m", "jobs.cli", "ingest", "x"], capture_output=True, text=True,
                          cwd=root, env=as_job, timeout=60)
    lines = died.stderr.strip().splitlines()
    assert died.returncode == 1 and len(lines) == 1, died.stderr
    assert lines[0].startswith("arcmatch: the cluster's `python` (") and "cannot import '" in lines[0]
    assert "ray start" in lines[0] and wrong_python(lines) is None
    here = subprocess.run([sys.executable, "-S", "-m", "jobs.cli", "--help"], capture_output=True, text=True,
                          cwd=root, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert here.returncode == 1 and "this Python" in here.stderr and "make setup" in here.stderr


def test_a_head_address_nothing_answers_at_is_unavailable_at_once():
    """Ray reads host:port as the cluster's GCS and waited 40 s for it, logging a line of its own; a URL and
    "auto" are left to Ray."""
    import socket

    from common.errors import Unavailable
    from jobs.pipelines.submit import head_reachable

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: nothing answers there
        with pytest.raises(Unavailable, match=f"127.0.0.1:{port}: nothing answers there"):
            head_reachable(f"127.0.0.1:{port}", timeout_s=2)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        head_reachable(f"127.0.0.1:{listening.getsockname()[1]}")
    for left_to_ray in ("http://127.0.0.1:1", "auto", "nonsense"):
        head_reachable(left_to_ray)
