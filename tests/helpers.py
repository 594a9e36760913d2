"""Helpers that several test modules share: images, free ports, a live API on loopback, the CLI as a process."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from trainer.synthetic import make_identity, render


def png(identity: int, n: int = 0, size: int = 32) -> bytes:
    """A synthetic face of `identity` (its n-th photo) as PNG bytes."""
    rng = np.random.default_rng([identity, n])
    buf = io.BytesIO()
    Image.fromarray(render(make_identity(0, identity), rng, size)).save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_app(app) -> Iterator[str]:
    """The ASGI app served by uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`arcmatch ARGS` as a separate process, as a user runs it (stdout and stderr are pipes, not a terminal)."""
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env if env is not None else dict(os.environ), **kwargs)
