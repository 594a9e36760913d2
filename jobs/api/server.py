"""uvicorn as arcmatch runs it: every connection must finish its request headers within a time limit, a request
whose framing two HTTP parsers could read two ways is refused, and the number of connections and requests in
flight is bounded.

uvicorn times out idle keep-alive connections but not a client that sends its headers a byte at a time: 150 such
connections stayed open indefinitely in a probe, each holding a socket and a protocol object. Bodies
are bounded by the request deadline (jobs/api/guard.py); headers are bounded here, at the protocol, since no
request exists yet for the app to time.

Framing: h11 reads a request with both Content-Length and Transfer-Encoding by its chunks and keeps the connection
open, and unfolds a header continued on the next line (obs-fold). A proxy in front that honours the other reading
would see a different request boundary: the bytes after it, a request smuggled past the proxy, would be answered
as the next request. RFC 9112 (sections 6.3 and 5.2) lets a server refuse both; this one answers 400 and closes the
connection before h11 sees the request, so nothing after it on that connection is ever read.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
HEAD_LIMIT = 64 * 1024  # h11's own limit on a request head is 16 KiB: past this, h11 has refused it already


def ambiguous_framing(head: bytes) -> str | None:
    """Why a request head (the bytes so far, up to its blank line) is framed ambiguously, or None."""
    lines = head.split(b"\r\n")
    first = next((n for n, line in enumerate(lines) if line), len(lines))  # RFC 9112 lets empty lines lead
    fields = lines[first + 1 :]
    if any(line[:1] in (b" ", b"\t") for line in fields):
        return "a header line continues the one before it (obs-fold, RFC 9112 section 5.2)"
    names = {line.split(b":", 1)[0].strip().lower() for line in fields if b":" in line}
    if b"content-length" in names and b"transfer-encoding" in names:
        return "both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)"
    return None


class HeaderTimeoutProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers are not complete within HEADER_TIMEOUT_S of the
    connection opening (or of the previous answer on a kept-alive connection), and refuses ambiguous framing."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer = None
    _head: bytes | None = b""  # the request head read so far; None once it is complete (body bytes follow)

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()
        # every request h11 parses, a pipelined one too (whose head came in the same packet as the request before
        # it, past the raw check below): both framings refused as a protocol error, which uvicorn answers with
        # 400 and a closed connection
        parse = self.conn.next_event

        def next_event():
            event = parse()
            if isinstance(event, h11.Request):
                names = {name.lower() for name, _ in event.headers}
                if b"content-length" in names and b"transfer-encoding" in names:
                    raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding")
            return event

        self.conn.next_event = next_event

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            why = ambiguous_framing(self._head if end < 0 else self._head[:end])
            if why is not None:
                self._refuse(f"ambiguous request framing: {why}")
                return
            if end >= 0 or len(self._head) > HEAD_LIMIT:
                self._head = None
        super().data_received(data)

    def _refuse(self, detail: str) -> None:
        body = json.dumps({"error": "bad input", "detail": detail}).encode()
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head = b""
        if not self.transport.is_closing():
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_overdue)

    def _headers_overdue(self) -> None:
        in_flight = self.cycle is not None and not self.cycle.response_complete
        if not in_flight and self.conn.their_state in (h11.IDLE, h11.DONE) and not self.transport.is_closing():
            self.transport.close()


def config(app, *, host: str, port: int, loop: str = "auto", log_level: str = "warning",
           limit_concurrency: int | None = None, log_format: str = "text", workers: int = 1):
    """uvicorn's Config; with workers > 1, `app` is the import path of a factory each worker process calls."""
    import uvicorn

    from jobs.api.requests import log_config

    logs = log_config(log_format, log_level.upper())
    return uvicorn.Config(app, host=host, port=port, loop=loop, log_level=log_level, http=HeaderTimeoutProtocol,
                          limit_concurrency=limit_concurrency, workers=workers, factory=workers > 1,
                          **({"log_config": logs} if logs else {}))


def run(config) -> None:
    """Serve until stopped: in this process, or with config.workers > 1 in that many processes sharing the socket
    (uvicorn's supervisor, which restarts a worker that dies)."""
    import uvicorn

    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        uvicorn.Server(config).run()
