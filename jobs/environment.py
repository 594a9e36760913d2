"""What to say when arcmatch runs in a Python without its dependencies: one line, not an import traceback.

Standard library only, as it is read exactly when something else could not be imported. The commonest case is a
job sent with `arcmatch submit` to a head started with a `ray` from a virtualenv that was not activated: Ray's
workers run the virtualenv's Python, but the job's entrypoint runs the `python` on the head's PATH.
"""

from __future__ import annotations

import os
import sys

CLUSTER_ADVICE = ("start Ray with the environment arcmatch is installed in first on its PATH (`source "
                  ".venv/bin/activate` before `ray start`), or run the cluster from the image k8s/Dockerfile builds")
LOCAL_ADVICE = "install it into this environment (`make setup`, or `pip install -e .` in the repository)"


def in_submitted_job() -> bool:
    """Whether this process is the driver of a job submitted through Ray's Jobs API (Ray sets this for it)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def missing_module(exc: ModuleNotFoundError) -> str:
    """The one line for a dependency that cannot be imported."""
    where, advice = ("the cluster's `python`", CLUSTER_ADVICE) if in_submitted_job() else ("this Python", LOCAL_ADVICE)
    return f"arcmatch: {where} ({sys.executable}) cannot import {exc.name!r}: {advice}"
