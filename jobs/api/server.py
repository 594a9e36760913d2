"""uvicorn as arcmatch runs it: every connection must finish its request headers within a time limit, and the
number of connections and requests in flight is bounded.

uvicorn times out idle keep-alive connections but not a client that sends its headers a byte at a time: 150 such
connections stayed open indefinitely in a probe (issue 14), each holding a socket and a protocol object. Bodies
are bounded by the request deadline (jobs/api/guard.py); headers are bounded here, at the protocol, since no
request exists yet for the app to time.
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0


class HeaderTimeoutProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers are not complete within HEADER_TIMEOUT_S of the
    connection opening (or of the previous answer on a kept-alive connection)."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
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
           limit_concurrency: int | None = None):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, loop=loop, log_level=log_level, http=HeaderTimeoutProtocol,
                          limit_concurrency=limit_concurrency)
