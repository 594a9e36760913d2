"""The sync and the async client: one set of operations (arcmatch_client/calls.py), two ways to send them.

A 503 is what the service answers while a backend is out (Milvus restarting, a request past its deadline): it
recovers by itself and says when to come back (Retry-After), so the client waits that long and tries again, up to
`retries` times; a connection that fails is tried again the same way, and so is a 5xx the service did not write
(the proxy in front saying the process that had the request went away: Ray Serve answers a request whose replica
died with a plain 500), and a 429 (a proxy limiting its callers; Retry-After as seconds or as an HTTP date). Every
operation may be repeated safely: enrolling a photo twice is one face (its id derives from identity and photo),
searching reads. Past the retries, Unavailable (RateLimited for a 429). Every other error answer raises its own class
at once (arcmatch_client/errors.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

from arcmatch_client.calls import Call, Operations
from arcmatch_client.errors import ServerError, Unavailable, for_answer
from arcmatch_client.parsing import parse

DEFAULT_TIMEOUT_S = 60.0


def _wait_s(attempt: int, retry_after: str | None, most: float) -> float:
    """The answer's Retry-After (seconds, or an HTTP date, as proxies write it), else a doubling back-off from half
    a second; never past `most`."""
    if retry_after is not None and retry_after.strip().isdigit():
        return min(float(retry_after), most)
    if retry_after:
        try:
            when = parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return min(max((when - datetime.now(timezone.utc)).total_seconds(), 0.0), most)
    return min(0.5 * 2 ** attempt, most)


def _request(call: Call, path: str) -> dict:
    return {"method": call.method, "url": path, "params": call.params, "json": call.json, "data": call.data,
            "files": call.files}


def _finish(call: Call, response: httpx.Response):
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        raise for_answer(response.status_code, body if isinstance(body, dict) else None,
                         response.headers.get("x-request-id"))
    if call.result is bytes:
        return response.content
    try:
        data = response.json()
        value = parse(call.result, data) if call.result is not None else data
        return call.pick(value) if call.pick else value
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not the service's answer (a proxy's login
        # page, another service at this address): one of the client's own errors, not a library's
        error = ServerError(f"HTTP {response.status_code} with a body that is not this API's answer "
                            f"({exc.__class__.__name__}): is {response.url} an arcmatch service?")
        error.status, error.detail = response.status_code, str(error)
        error.request_id = response.headers.get("x-request-id")
        raise error from None


@dataclass(frozen=True)
class _Retry:
    seconds: float


class _Sending(Operations):
    """What both clients share: their settings, a copy scoped to another gallery over the same connection, and,
    after each try, the result, an error, or how long to wait before the next."""

    _http_class: type  # httpx.Client or httpx.AsyncClient

    def __init__(self, url: str, key: str, *, gallery: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 retries: int = 4, max_wait_s: float = 30.0, http=None) -> None:
        super().__init__(gallery)
        if retries < 0 or max_wait_s < 0:
            raise ValueError(f"retries and max_wait_s must be 0 or more, got {retries} and {max_wait_s}")
        self.url, self.retries, self.max_wait_s = url, retries, max_wait_s
        self._owns_http = http is None  # a scoped copy leaves the connection to the client it came from
        self.http = http or self._http_class(base_url=url, headers={"X-API-Key": key}, timeout=timeout)

    def gallery(self, name: str):
        """The same service and connection, for gallery `name`."""
        return type(self)(self.url, "", gallery=name, retries=self.retries, max_wait_s=self.max_wait_s,
                          http=self.http)

    def _outcome(self, call: Call, attempt: int, answer: httpx.Response | httpx.TransportError):
        last = attempt == self.retries
        if isinstance(answer, httpx.TransportError):
            if last:
                raise Unavailable(f"the arcmatch service at {self.url} is out of reach "
                                  f"({answer.__class__.__name__})") from None
            return _Retry(_wait_s(attempt, None, self.max_wait_s))
        if (answer.status_code in (429, 503) or _from_the_way_there(answer)) and not last:
            return _Retry(_wait_s(attempt, answer.headers.get("retry-after"), self.max_wait_s))
        return _finish(call, answer)


def _from_the_way_there(answer: httpx.Response) -> bool:
    """A 500, 502 or 504 the service did not write: its own errors are JSON with an "error" field, and its own 500
    is a bug, not retried."""
    if answer.status_code not in (500, 502, 504):
        return False
    try:
        body = answer.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and "error" in body)


class Client(_Sending):
    """`Client(url, key)` for the service's default gallery (`gallery=` or `.gallery(name)` for another one). Use
    as a context manager, or call close()."""

    _http_class = httpx.Client

    def _run(self, call: Call):
        for attempt in range(self.retries + 1):
            try:
                answer = self.http.request(**_request(call, self._path(call)))
            except httpx.TransportError as exc:
                answer = exc
            outcome = self._outcome(call, attempt, answer)
            if not isinstance(outcome, _Retry):
                return outcome
            time.sleep(outcome.seconds)

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_) -> None:
        self.close()


class AsyncClient(_Sending):
    """The same operations as Client, each returning an awaitable: `await client.search(photo)`."""

    _http_class = httpx.AsyncClient

    async def _run(self, call: Call):
        for attempt in range(self.retries + 1):
            try:
                answer = await self.http.request(**_request(call, self._path(call)))
            except httpx.TransportError as exc:
                answer = exc
            outcome = self._outcome(call, attempt, answer)
            if not isinstance(outcome, _Retry):
                return outcome
            await asyncio.sleep(outcome.seconds)

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_) -> None:
        await self.aclose()
