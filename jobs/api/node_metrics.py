"""A node's metrics port for Ray Serve: the sum of every arcmatch replica on the node, served outside the proxy.

Why not /metrics through the proxy: the proxy may hand a scrape of one pod to a replica on another (when the pod's
own replicas are busy, or it holds none), and that pod's counters would then be reported as this one's. Each
replica tries to take the port; the first on a node holds it and answers with the node's shared directory
(jobs/api/metrics.py), the others keep trying every few seconds, so when the holder dies another takes over.
A node with no arcmatch replica answers nothing there, which a scrape reports as the target being down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from jobs.api.keys import ApiKey, bearer, scrape_refusal
from jobs.api.metrics import exposition

RETRY_S = 5.0


class _Scrape(BaseHTTPRequestHandler):
    server: _NodeServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        refusal = scrape_refusal(self.server.keys, self.headers.get("X-API-Key") or bearer(self.headers.get(
            "Authorization")))
        if refusal is not None:
            self.send_response(refusal.http_status)
            self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(str(refusal).encode())
            return
        self.server.before_scrape()
        body = exposition()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        pass  # a scrape every few seconds is not worth a log line


class _NodeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, before_scrape: Callable[[], None], keys: list[ApiKey]) -> None:
        super().__init__(("0.0.0.0", port), _Scrape)  # noqa: S104 (Prometheus scrapes it from another pod)
        self.before_scrape, self.keys = before_scrape, keys


def serve_node_metrics(port: int, before_scrape: Callable[[], None], keys: list[ApiKey],
                       retry_s: float = RETRY_S) -> threading.Thread:
    """Hold `port` for this node as soon as it is free (a daemon thread: it ends with the replica). `keys`: the
    service's, which say whether a scrape needs a metrics key (jobs/api/keys.py), as for the API's /metrics."""

    def hold() -> None:
        while True:
            try:
                server = _NodeServer(port, before_scrape, keys)
            except OSError:  # another replica of this node holds it
                time.sleep(retry_s)
                continue
            server.serve_forever()
            return

    thread = threading.Thread(target=hold, name=f"arcmatch-node-metrics-{port}", daemon=True)
    thread.start()
    return thread
