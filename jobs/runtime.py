"""Starting Ray for a command, and keeping its own logging out of the terminal.

Ray, Ray Train and Ray Data log a great deal to the terminal of the process that starts them: token
authentication notes, per-epoch checkpoint lines from every worker, progress logging, and C++ `E ...
core_worker.cc` lines that read as failures although nothing failed. A command shows its own progress bars and
report instead (jobs/progress.py), so unless `--verbose` is given:
- workers' output is not forwarded to the driver (it stays in Ray's session logs, /tmp/ray/session_latest/logs);
- the process's file descriptor 2, where native code writes, goes to a log file, and Python's `sys.stderr` keeps
  the real terminal for arcmatch's own lines;
- Python loggers of Ray and the libraries, and warnings, go to that log file too.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from common.errors import Unavailable

_LOG_FILE: Path | None = None
NOISY_LOGGERS = ("arcmatch", "ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "filelock", "urllib3",
                 "milvus_lite", "pymilvus", "py.warnings")


def log_file() -> Path | None:
    """Where this process's library logs go, once quiet_terminal() has run."""
    return _LOG_FILE


def quiet_terminal(command: str) -> Path:
    """Send library logging and native stderr to a log file; keep sys.stderr on the terminal. Idempotent."""
    global _LOG_FILE
    if _LOG_FILE is not None:
        return _LOG_FILE
    directory = Path(os.environ.get("ARCMATCH_LOG_DIR") or Path(tempfile.gettempdir()) / "arcmatch-logs")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    handle = open(path, "a", buffering=1)  # noqa: SIM115  (lives as long as the process)
    sys.stderr.flush()
    terminal = os.dup(2)
    os.dup2(handle.fileno(), 2)
    sys.stderr = io.TextIOWrapper(os.fdopen(terminal, "wb", buffering=0), write_through=True,
                                  encoding=sys.stderr.encoding or "utf-8", errors="replace")
    to_file = logging.StreamHandler(handle)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.captureWarnings(True)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [to_file]
        logger.propagate = False
    atexit.register(_close_log, handle, path)
    _LOG_FILE = path
    return path


def _close_log(handle, path: Path) -> None:
    """At exit: a log file nothing was written to is removed rather than left behind."""
    handle.flush()
    if path.stat().st_size == 0:
        path.unlink(missing_ok=True)


def _keep_cluster_messages_in_log() -> None:
    """Ray prints the cluster's error messages to a driver's stdout from a thread of its own ("the node ... has
    been marked dead", the last lines of a dead raylet's log), with no setting to turn that off; a quiet job, which
    goes on by itself after such a death, keeps them in its log file with Ray's other lines instead. The thread
    looks the printer up in its module at each message, so replacing it there is enough; a Ray without it is left
    as it is."""
    import ray._private.worker as ray_worker

    if not callable(getattr(ray_worker, "print_to_stdstream", None)):
        return
    log = logging.getLogger("ray")

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            log.warning("%s", line)

    ray_worker.print_to_stdstream = to_log


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> None:
    """A local Ray by default, a cluster when an address is given. Quiet: workers' logs stay in Ray's files."""
    import ray

    if ray.is_initialized():
        return
    # the dashboard stays on: Ray Train's placement-group cleaner polls the state API it serves
    kwargs = {"logging_level": logging.ERROR if quiet else logging.INFO, "log_to_driver": not quiet}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, **kwargs)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise Unavailable(f"Ray could not start or be reached at {address or 'a new local instance'}: {exc}") from exc
    except Exception as exc:  # ray.init raises a bare Exception when its local node times out starting
        if "timed out during startup" not in str(exc):
            raise
        raise Unavailable(f"the local Ray did not start in time (the machine may be overloaded): {exc}") from exc
    if quiet:
        _keep_cluster_messages_in_log()
    from ray.data import DataContext

    context = DataContext.get_current()
    context.print_on_execution_start = not quiet
    context.enable_progress_bars = not quiet  # arcmatch draws one bar per stage itself
    if quiet:
        for name in NOISY_LOGGERS:  # ray.init configures its own handlers: keep them off the terminal
            logger = logging.getLogger(name)
            if _LOG_FILE is None:
                logger.setLevel(logging.ERROR)
            else:
                logger.handlers = [h for h in logger.handlers if getattr(h, "stream", None) is not sys.stderr]
