"""The middleware Ray Serve's proxy wraps itself in: a request the proxy leaves unanswered (its replica died
mid-way) is a 503 with Retry-After and a JSON detail; every answer the app gave, its own 500 included, passes as it
was; and Ray Serve accepts what the import path returns. (A replica's death under load: bench/serve_node_fault.py.)"""

import asyncio
import json

import pytest

from jobs.api.proxy import PROXY_CALLBACK, PROXY_ENV, RETRY_AFTER_S, UNANSWERED, UnansweredIs503, middlewares


def call(app, scope_type: str = "http") -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(UnansweredIs503(app)({"type": scope_type, "path": "/v1/search"}, receive, send))
    return sent


async def silent(scope, receive, send):  # what Serve's proxy does when the replica dies: nothing at all
    return None


async def dies(scope, receive, send):
    raise RuntimeError("the actor died")


async def bug(scope, receive, send):  # the app's own 500: a bug, said as the app says it
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b'{"detail": "internal error"}'})


async def half(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("gone half-way")


@pytest.mark.parametrize("app", [silent, dies])
def test_a_request_left_unanswered_is_a_503_to_try_again(app):
    start, body = call(app)
    assert start["status"] == 503 and (b"retry-after", str(RETRY_AFTER_S).encode()) in start["headers"]
    assert (b"content-type", b"application/json") in start["headers"]
    assert json.loads(body["body"]) == {"error": "backend unavailable", "detail": UNANSWERED}  # the API's ErrorOut


def test_what_the_app_answered_passes_as_it_was():
    assert [m.get("status") for m in call(bug)] == [500, None]
    with pytest.raises(RuntimeError, match="half-way"):  # a response already started cannot be taken back
        call(half)
    assert call(silent, "lifespan") == []  # not a request: nothing to answer


def test_ray_serve_takes_what_the_import_path_gives():
    from ray.serve._private.http_util import validate_http_proxy_callback_return
    from ray.serve._private.utils import call_function_from_import_path

    assert PROXY_CALLBACK == "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
    found = validate_http_proxy_callback_return(call_function_from_import_path(PROXY_ENV[PROXY_CALLBACK]))
    assert [m.cls for m in found] == [m.cls for m in middlewares()] == [UnansweredIs503]
