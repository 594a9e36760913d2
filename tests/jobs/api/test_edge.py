"""The API's edge over real HTTP: keys and body limits checked before the body is read, deadlines, security
headers, CORS, and the audit trail (jobs/api/guard.py, jobs/api/auditing.py, jobs/audit.py)."""

import json
import socket
import time

import httpx
import pytest

from jobs.api.app import create_app
from jobs.audit import read
from jobs.cli import main
from jobs.settings import Settings
from tests.helpers import READ_ENTRY, READ_KEY, TINY_DIM, WRITE_ENTRY, WRITE_KEY, R, W, live_app, png

UPLOAD_LIMIT = 200_000


def settings_for(tmp_path, model, **extra) -> Settings:
    return Settings(model=model, api_keys=f"{READ_ENTRY},{WRITE_ENTRY}", milvus_uri=str(tmp_path / "edge.db"),
                    gallery="edge", max_upload_bytes=UPLOAD_LIMIT, audit_dir=tmp_path / "audit", **extra)


@pytest.fixture(scope="module")
def edge(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("edge")
    with live_app(create_app(settings_for(tmp, tiny_model_dir))) as base:
        yield base, tmp / "audit"


def raw_request(base: str, head: str, body_chunks=(), chunk_pause_s: float = 0.0) -> tuple[str, int]:
    """Send a request by hand on a socket (headers, then body chunks until the server answers); returns the
    answer's status line and how many body bytes the server let us send before it answered."""
    host, port = base.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        conn.setblocking(False)
        answer = b""
        for chunk in body_chunks:
            try:
                answer += conn.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            try:
                conn.sendall(chunk)
                sent += len(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            time.sleep(chunk_pause_s)
        conn.setblocking(True)
        conn.settimeout(30)
        while b"\r\n" not in answer:
            part = conn.recv(65536)
            if not part:
                break
            answer += part
    return answer.split(b"\r\n", 1)[0].decode(), sent


def test_a_huge_upload_without_a_key_is_refused_before_its_body_is_read(edge):
    base, _ = edge
    head = (f"POST /v1/identities/ann/faces HTTP/1.1\nHost: x\nContent-Type: multipart/form-data; boundary=b\n"
            f"Content-Length: {500 * 1024 * 1024}\n")
    started = time.perf_counter()
    status, sent = raw_request(base, head)  # not one byte of the 500 MiB body is sent
    assert status.split()[1] == "401" and time.perf_counter() - started < 5


def test_a_declared_body_over_the_cap_is_refused_unread_even_with_a_key(edge):
    base, _ = edge
    head = (f"POST /v1/search HTTP/1.1\nHost: x\nX-API-Key: {READ_KEY}\nContent-Type: multipart/form-data; "
            f"boundary=b\nContent-Length: {500 * 1024 * 1024}\n")
    assert raw_request(base, head)[0].split()[1] == "413"


def test_a_chunked_body_is_cut_off_at_the_cap(edge):
    """No Content-Length: the body is counted as it streams; the answer comes long before 500 MiB are sent."""
    base, _ = edge
    head = (f"POST /v1/search HTTP/1.1\nHost: x\nX-API-Key: {READ_KEY}\nContent-Type: multipart/form-data; "
            f"boundary=b\nTransfer-Encoding: chunked\n")
    piece = 1024 * 1024

    def chunked(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
    chunks = (chunked(part if n == 0 else b"0" * piece) for n in range(500))
    status, sent = raw_request(base, head, chunks, chunk_pause_s=0.002)
    assert status.split()[1] == "413"
    assert sent < UPLOAD_LIMIT + 32 * piece  # the cap plus what the sockets' buffers hold, not 500 MiB


def test_a_write_with_a_read_key_is_refused_before_its_body(edge):
    base, _ = edge
    head = (f"POST /v1/identities/ann/faces HTTP/1.1\nHost: x\nX-API-Key: {READ_KEY}\n"
            f"Content-Type: multipart/form-data; boundary=b\nContent-Length: {100 * 1024 * 1024}\n")
    assert raw_request(base, head)[0].split()[1] == "403"


def test_every_answer_carries_the_security_headers_and_no_cors(edge):
    base, _ = edge
    with httpx.Client(base_url=base) as client:
        for response in (client.get("/v1/health"), client.get("/v1/identities"), client.get("/nothing", headers=R),
                         client.options("/v1/search", headers={"Origin": "https://evil.example",
                                                               "Access-Control-Request-Method": "POST"})):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert "default-src 'none'" in response.headers["content-security-policy"]
            assert "access-control-allow-origin" not in response.headers


def test_cors_answers_only_the_configured_origins(tmp_path, tiny_model_dir):
    settings = settings_for(tmp_path, tiny_model_dir, cors_origins=["https://review.example"])
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base) as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
        allowed = client.options("/v1/search", headers={"Origin": "https://review.example", **preflight})
        assert allowed.headers["access-control-allow-origin"] == "https://review.example"
        other = client.options("/v1/search", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers


def test_a_request_past_its_deadline_is_a_503_with_retry_after(tmp_path, tiny_model_dir):
    app = create_app(settings_for(tmp_path, tiny_model_dir, request_timeout_s=0.5))
    service = app.state.provider()[0]
    real_search = service.index.search

    def stalled_search(*args, **kwargs):  # a backend that hangs (a Milvus outage); the real search afterwards
        time.sleep(2)
        return real_search(*args, **kwargs)

    service.index.search = stalled_search
    with live_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        started = time.perf_counter()
        answer = client.post("/v1/search/embedding", json={"embeddings": [[0.25] * TINY_DIM]}, headers=R)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
        assert answer.json()["error"] == "backend unavailable" and time.perf_counter() - started < 1.9
        assert client.get("/v1/health").status_code == 200


def test_a_body_that_never_all_arrives_is_a_408_not_an_outage(tmp_path, tiny_model_dir):
    with live_app(create_app(settings_for(tmp_path, tiny_model_dir, request_timeout_s=0.5))) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(f"POST /v1/search/embedding HTTP/1.1\r\nHost: x\r\nX-API-Key: {READ_KEY}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"embeddings\": [".encode())
            answer = conn.recv(65536).decode("latin-1")
        assert answer.split()[1] == "408" and "did not all arrive" in answer and "retry-after" not in answer.lower()


def test_two_different_keys_are_refused_whichever_comes_last(edge):
    base, _ = edge
    for keys in ((READ_KEY, "wrong"), ("wrong", READ_KEY)):
        head = "GET /v1/identities HTTP/1.1\nHost: x\n" + "".join(f"X-API-Key: {k}\n" for k in keys)
        assert raw_request(base, head)[0].split()[1] == "400"
    assert raw_request(base, f"GET /v1/identities HTTP/1.1\nHost: x\nX-API-Key: {READ_KEY}\n"
                             f"X-API-Key: {READ_KEY}\n")[0].split()[1] == "200"  # the same key twice is one key


def test_writes_are_audited_with_the_key_name_never_the_key(edge):
    base, directory = edge
    with httpx.Client(base_url=base, timeout=60) as client:
        enrolled = client.post("/v1/identities/carol/faces", files=[("images", ("c.png", png(5)))], headers=W)
        face = enrolled.json()["face_ids"][0]
        client.delete(f"/v1/identities/carol/faces/{face}", headers=W)
        client.delete("/v1/identities/nobody", headers=W)
        client.delete("/v1/identities/carol", headers={"X-API-Key": "am_stolen"})
        client.post("/v1/search", files={"image": ("p.png", png(5))}, headers=R)  # searches: off by default
    records = [r for r in read(directory) if r.get("identity") == "carol" or "carol" in r["path"]
               or r["path"].endswith("nobody")]
    summary = [(r.get("action"), r["status"], r["key"]) for r in records]
    assert summary == [("enroll", 201, "admin"), ("delete_face", 200, "admin"), ("delete_identity", 404, "admin"),
                       ("delete_identity", 401, None)]  # refused before its route: what it meant, from the path
    assert records[-1]["identity"] == "carol"
    assert records[0]["face_ids"] == [face] and records[1]["face_ids"] == [face]
    assert not [r for r in read(directory) if r["path"].startswith("/v1/search")]
    with httpx.Client(base_url=base, timeout=60) as client:  # every write route's refusal names its action
        for method, path in (("POST", "/v1/clusters/3/promote"), ("POST", "/v1/galleries"),
                             ("POST", "/v1/gallery/strangers/kept"), ("DELETE", "/v1/galleries/x/calibration")):
            assert client.request(method, path, headers={"X-API-Key": "am_stolen"}).status_code == 401
    refused = {r["path"]: r.get("action") for r in read(directory) if r["status"] == 401}
    assert refused["/v1/clusters/3/promote"] == "promote" and refused["/v1/galleries"] == "gallery_create"
    assert refused["/v1/gallery/strangers/kept"] == "confirm_strangers"
    assert refused["/v1/galleries/x/calibration"] == "calibration_clear"
    text = "".join(p.read_text() for p in directory.glob("audit-*.jsonl"))
    assert WRITE_KEY not in text and READ_KEY not in text


def test_searches_are_audited_when_enabled_and_the_cli_reads_the_trail(tmp_path, tiny_model_dir, capsys):
    settings = settings_for(tmp_path, tiny_model_dir, audit_searches=True)
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60) as client:
        client.post("/v1/identities/dave/faces", files=[("images", ("d.png", png(6)))], headers=W)
        client.post("/v1/search", files={"image": ("p.png", png(6))}, headers=R)
        client.post("/v1/search/embedding", json={"embeddings": [[0.0] * TINY_DIM]}, headers=R)
    records = list(read(settings.audit_dir))
    assert [r["action"] if r["status"] < 400 else r["status"] for r in records] == ["enroll", "search", 400]
    assert records[1]["key"] == "reader" and records[1]["matches"][0]["identity"] == "dave"

    assert main(["audit", "--dir", str(settings.audit_dir), "--action", "search", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["search"]
    assert main(["audit", "--dir", str(settings.audit_dir), "--failed"]) == 0
    assert "1 record(s)" in capsys.readouterr().out
    assert main(["audit", "--dir", str(settings.audit_dir), "--gallery", settings.gallery]) == 0
    assert "3 record(s)" in capsys.readouterr().out
    assert main(["audit", "--dir", str(settings.audit_dir), "--gallery", "elsewhere"]) == 0
    assert "0 record(s)" in capsys.readouterr().out
    assert main(["audit", "--dir", str(settings.audit_dir), "--since", "yesterday"]) == 2
    assert main(["audit", "--dir", str(settings.audit_dir), "--limit", "0"]) == 2
    assert main(["audit", "--dir", str(settings.audit_dir), "--action", "serach"]) == 0
    said = capsys.readouterr()
    assert "0 record(s)" in said.out and "those in this trail: enroll, search, search_embedding" in said.err


def test_a_client_that_never_finishes_its_headers_is_disconnected(tmp_path, tiny_model_dir, monkeypatch):
    from jobs.api.server import HeaderTimeoutProtocol

    monkeypatch.setattr(HeaderTimeoutProtocol, "header_timeout_s", 0.5)
    with live_app(create_app(settings_for(tmp_path, tiny_model_dir))) as base:
        host, port = base.removeprefix("http://").split(":")
        slow, idle = (socket.create_connection((host, int(port)), timeout=10) for _ in range(2))
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        started = time.perf_counter()
        assert slow.recv(1024) == b"" and idle.recv(1024) == b""  # both closed by the server
        assert time.perf_counter() - started < 5
        with httpx.Client(base_url=base) as client:  # a client that sends its headers is served as before
            assert client.get("/v1/health").status_code == 200


def exchange(base: str, *pieces: bytes) -> bytes:
    """Send these bytes on one connection (a pause between pieces) and read every answer until the server closes
    it, or nothing more comes for two seconds."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        for piece in pieces:
            conn.sendall(piece)
            time.sleep(0.2)
        conn.settimeout(2)
        answer = b""
        try:
            while part := conn.recv(65536):
                answer += part
        except TimeoutError:
            answer += b"<still open>"
    return answer


SMUGGLED = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("pieces", [
    [b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
     + SMUGGLED],
    [b"POST /v1/search HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n", b"content-length: 4\r\n\r\n0\r\n\r\n",
     SMUGGLED],  # the second header in a later packet
    [b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Note: one\r\n  folded\r\n\r\n" + SMUGGLED],  # obs-fold
    [SMUGGLED + b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n0\r\n\r\n" + SMUGGLED],  # pipelined behind a plain request, in the same packet
], ids=["cl-and-te", "te-then-cl-later", "obs-fold", "pipelined"])
def test_ambiguous_framing_is_refused_and_the_connection_closed(edge, pieces):
    answer = exchange(edge[0], *pieces)
    plain = answer.count(b"HTTP/1.1 200 ")  # the plain request before the ambiguous one is answered as usual
    assert answer.split(b"HTTP/1.1 ")[plain + 1].startswith(b"400 ")
    assert answer.count(b"HTTP/1.1 ") == plain + 1 and not answer.endswith(b"<still open>")  # the smuggled GET:
    assert plain == (1 if pieces[0].startswith(SMUGGLED) else 0)  # never read
    assert plain or b"ambiguous request framing" in answer  # refused before h11 sees it, saying why


def test_plain_framing_keeps_the_connection_and_answers_each_request(edge):
    chunked = (b"POST /v1/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n"
               b"\r\n4\r\nabcd\r\n0\r\n\r\n")
    answer = exchange(edge[0], SMUGGLED + SMUGGLED, chunked + SMUGGLED)
    assert answer.count(b"HTTP/1.1 200 ") == 3 and answer.count(b"HTTP/1.1 ") == 4 and answer.endswith(b"<still open>")
