"""The app served by uvicorn in a thread of this process, on a free loopback port.

For tests and benchmarks that need real HTTP beside a Milvus Lite gallery, which opens its file from one process
only: the server then has to live in the process that holds the gallery.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from jobs.api.server import config


@contextmanager
def serve_in_thread(app, *, start_timeout_s: float = 120) -> Iterator[str]:
    """Yields the base URL once uvicorn has started; stops the server on exit."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(config(app, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + start_timeout_s
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
