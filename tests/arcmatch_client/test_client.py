"""The Python client against a live service (uvicorn on loopback) on both stores: every route through its typed
methods, each kind of error answer as its own exception, and a 503 waited out as the answer's Retry-After says."""

import asyncio
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from hashlib import sha256

import httpx
import pytest

from arcmatch_client import AsyncClient, Client, models
from arcmatch_client.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
    UnsupportedMedia,
)
from jobs.api.app import create_app
from jobs.api.keys import new_key
from jobs.settings import Settings
from tests.helpers import READ_ENTRY, READ_KEY, live_app, png

KEY, ENTRY = new_key("client", ["read", "write", "admin"])


@pytest.fixture(scope="module", params=["lite", "server"])
def service(request, tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("client")
    uri = str(root / "c.db") if request.param == "lite" else request.getfixturevalue("milvus_server_uri")
    settings = Settings(model=tiny_model_dir, milvus_uri=uri, gallery=f"client_{request.param}_{int(time.time())}",
                        api_keys=f"{ENTRY},{READ_ENTRY}", archive_uri=str(root / "archive"),
                        keep_unknown_faces=True, max_upload_bytes=100_000)
    with live_app(create_app(settings)) as base:
        yield base, settings


def test_every_route_through_the_client(service, tmp_path):
    base, settings = service
    photo = tmp_path / "ann.png"
    photo.write_bytes(png(1))
    with Client(base, KEY) as api:
        assert api.health() == models.Health(status="ok")
        name = f"shop_{settings.gallery}"
        made = api.create_gallery(name, fpir=0.1)
        assert isinstance(made, models.Gallery) and made.faces == 0 and not made.default and made.target_fpir == 0.1
        listed = api.galleries()
        assert name in [g.name for g in listed.galleries] and listed.next_cursor is None
        # pages of one: the service's default gallery, this one and any other on the store (the server is shared)
        paged, cursor = [], None
        while True:
            page = api.galleries(cursor=cursor, limit=1)
            paged += [g.name for g in page.galleries]
            if page.next_cursor is None:
                break
            assert len(page.galleries) == 1 and page.next_cursor == page.galleries[0].name
            cursor = page.next_cursor
        assert paged == [g.name for g in listed.galleries] and len(paged) >= 2
        shop = api.gallery(name)
        assert shop.describe_gallery(name).ready.gallery == name and shop.ready().gallery == name

        enrolled = shop.enroll("ann", [photo, png(1, 1)], metadata={"team": "blue"})  # a path and bytes
        assert isinstance(enrolled, models.Enrolled) and len(enrolled.face_ids) == 2
        shop.enroll("bob", [png(2)])
        shop.enroll("bobby", [png(3)])
        [face] = shop.search(png(1, 3))
        assert isinstance(face, models.FaceDecision) and face.match and face.identity == "ann"
        with open(photo, "rb") as opened:  # a file opened for reading, as well as a path and bytes
            assert shop.search(opened)[0].identity == "ann"
        # the client's own one-line errors, before anything is sent (an empty name was "Not Found", no photos
        # "body.images: Field required", a folder a bare IsADirectoryError)
        for wrong, said in ((lambda: shop.enroll(" ", [photo]), "name is empty"),
                            (lambda: shop.enroll("ann", []), "no photos to enroll as 'ann'"),
                            (lambda: shop.search(tmp_path), "is a folder, not a photo"),
                            (lambda: shop.search(tmp_path / "gone.jpg"), "gone.jpg: no such file"),
                            (lambda: shop.search(open(photo)), "open as text")):
            with pytest.raises(BadInput, match=said):
                wrong()
        assert isinstance(face.candidates[0], models.Candidate) and isinstance(face.face.quality, models.Quality)
        for person in (90, 91):  # strangers' faces, kept unlabelled (keep_unknown_faces): something to cluster
            for n in range(3):
                [stranger] = shop.search(png(person, n))
                assert not stranger.match
        [decision] = shop.search_embeddings([[1.0] + [0.0] * 63], threshold=0.99)
        assert isinstance(decision, models.Decision) and not decision.match
        with pytest.raises(BadInput, match=r"embeddings\[0\]\[1\] is nan: every value must be a finite number"):
            shop.search_embeddings([[1.0, float("nan")] + [0.0] * 62])  # the client's own error, not JSON's

        page = shop.identities(limit=2)
        assert [i.identity for i in page.identities] == ["ann", "bob"] and page.next_cursor == "bob"
        assert [i.identity for i in shop.identities(cursor=page.next_cursor).identities] == ["bobby"]
        ann = shop.identity("ann")
        assert {f.metadata["team"] for f in ann.faces} == {"blue"}
        # a path by its name, bytes by their digest: each photo's source tells it apart
        assert sorted(f.source for f in ann.faces) == ["api:ann.png", f"api:photo-{sha256(png(1, 1)).hexdigest()[:12]}"]
        assert shop.face_image(enrolled.face_ids[0])[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb")

        assert shop.merge_identities("bob", "bobby", proceed=True).identity == "bob"
        moved = shop.move_face("ann", enrolled.face_ids[1], "bob")
        assert moved.identity == "bob" and "ann" in moved.rejected_from
        assert "bob" in shop.reject_face("bob", enrolled.face_ids[1]).rejected_from
        back = shop.name_faces("bob", [enrolled.face_ids[1]], proceed=True)  # unlabelled now; rejected, so proceed
        assert back.identity == "bob" and back.face_ids == [str(enrolled.face_ids[1])] and back.skipped == []
        assert shop.confirm_face("bob", enrolled.face_ids[1]).face_id == str(enrolled.face_ids[1])
        assert shop.different_people("ann", "bob").pairs == [["ann", "bob"]]
        assert shop.distinct_pairs().pairs == [["ann", "bob"]]
        with pytest.raises(NotFound, match="no unlabelled face comes from 'visitors/1.jpg'"):
            shop.confirm_strangers(["visitors/1.jpg"])  # the route is the gallery's; tests/jobs/api has it mark faces
        assert shop.confirm_kept_strangers().face_ids  # the strangers searched above were kept
        assert shop.confirm_kept_strangers().face_ids == []  # and are confirmed now
        assert shop.check().identities == 2
        assert shop.calibration().source in ("model", "collection")
        for person in range(20):  # enough people for a calibration's trials
            shop.enroll(f"extra {person:02d}", [png(100 + person)], proceed=True)
        chosen = shop.calibrate(method="top1")  # at the gallery's own target, as it was made
        assert isinstance(chosen, models.GalleryCalibration) and chosen.target_fpir == 0.1
        assert shop.calibration().source == "gallery" and shop.clear_calibration().source != "gallery"
        with pytest.raises(NotFound):  # never clustered
            shop.clusters()

        from jobs.pipelines.cluster import cluster

        cluster(milvus=settings.milvus_uri, root=settings.archive_uri, gallery=name, k=6, threshold=0.5)
        clusters = shop.clusters(min_size=1)
        assert isinstance(clusters, models.ClusterPage) and clusters.total >= 2
        first, second = clusters.clusters[:2]
        faces = shop.cluster(first.cluster).face_ids
        apart = shop.split_cluster(first.cluster, faces[:1])
        assert apart.face_ids == faces[:1] and apart.cluster != first.cluster
        assert sorted(shop.merge_clusters([first.cluster, apart.cluster]).face_ids) == sorted(faces)
        assert shop.cluster(second.cluster).size == second.size
        promoted = shop.promote(first.cluster, "carol", proceed=True)
        assert promoted.identity == "carol" and promoted.face_ids

        assert shop.delete_face("ann", enrolled.face_ids[0]).deleted_face == enrolled.face_ids[0]
        assert shop.delete_identity("carol").deleted_faces == len(promoted.face_ids)
        with pytest.raises(BadInput, match="repeat with erase="):
            api.delete_gallery(name)
        held = int(api.describe_gallery(name).faces)
        erased = api.delete_gallery(name, erase=held)
        assert isinstance(erased, models.GalleryErased) and erased.faces == held


def test_each_error_answer_is_its_own_exception(service):
    base, settings = service
    with Client(base, KEY) as api, Client(base, READ_KEY) as reader, Client(base, "am_wrong") as stranger:
        api.enroll("dan", [png(4)])
        with pytest.raises(Unauthorized) as refused:
            stranger.identities()
        assert refused.value.status == 401 and refused.value.request_id
        with pytest.raises(Forbidden):
            reader.enroll("dan", [png(4)])
        with pytest.raises(NotFound, match="no identity|not found"):
            api.identity("nobody")
        with pytest.raises(NotFound, match="gallery 'nowhere' not found"):
            api.gallery("nowhere").search(png(4))
        with pytest.raises(Conflict):  # dan's face under another name
            api.enroll("not_dan", [png(4, 1)])
        for dots in (".", ".."):  # sent as the name, never resolved as "here" or "up" (the gallery, for a delete)
            with pytest.raises(BadInput, match="a URL path cannot address it"):
                api.gallery(settings.gallery).delete_identity(dots)
        assert api.gallery(settings.gallery).identity("dan").identity == "dan"
        with pytest.raises(UnsupportedMedia):
            api.search(b"%PDF-1.7" + b"\x00" * 64)
        with pytest.raises(BadInput, match="first bytes say GIF, but it does not decode") as corrupt:
            api.search(b"GIF89a" + b"\x00" * 64)  # a GIF that is not one
        assert "0x" not in str(corrupt.value)
        with pytest.raises(BadInput):  # 422: a value out of its range
            api.search(png(4), top_n=0)
        with pytest.raises(PayloadTooLarge):
            api.search(b"\x89PNG" + b"\x00" * 200_000)
    with pytest.raises(Unavailable, match="out of reach"):
        with Client("http://127.0.0.1:9", KEY, retries=1, max_wait_s=0.01) as nowhere:
            nowhere.health()


class Outage(httpx.BaseTransport):
    """The network in front of the live service: the first `down` requests are answered 503 with Retry-After, as
    the service answers while its store is out (or with `answer`); the rest reach the service."""

    def __init__(self, down: int, retry_after: str = "1", answer: httpx.Response | None = None) -> None:
        self.down, self.retry_after, self.seen, self.answer = down, retry_after, 0, answer
        self.service = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.seen <= self.down:
            return self.answer or httpx.Response(503, json={"error": "backend unavailable",
                                                            "detail": "the store is restarting"},
                                                 headers={"Retry-After": self.retry_after})
        return self.service.handle_request(request)


def test_a_503_is_waited_out_as_retry_after_says_then_the_answer_comes(service):
    base, _ = service
    outage = Outage(down=2)
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, transport=outage) as http:
        started = time.perf_counter()
        assert Client(base, KEY, http=http).health().status == "ok"
        assert time.perf_counter() - started >= 2.0 and outage.seen == 3  # waited 1 s twice, then answered
    outage = Outage(down=10, retry_after="0")
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, transport=outage) as http:
        with pytest.raises(Unavailable, match="restarting"):
            Client(base, KEY, http=http, retries=2).health()
        assert outage.seen == 3  # the first try and two retries, then the 503's own error
    # a proxy's 429, its Retry-After an HTTP date: waited out the same way, and past the retries its own class
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=1), usegmt=True)
    limited = httpx.Response(429, text="slow down", headers={"Retry-After": soon})
    outage = Outage(down=1, answer=limited)
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, transport=outage) as http:
        assert Client(base, KEY, http=http).health().status == "ok" and outage.seen == 2
    outage = Outage(down=10, answer=httpx.Response(429, text="slow down", headers={"Retry-After": "0"}))
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, transport=outage) as http:
        with pytest.raises(RateLimited):
            Client(base, KEY, http=http, retries=1).health()


def test_a_500_from_the_proxy_is_tried_again_and_the_services_own_is_not(service):
    """Ray Serve's proxy answers a request whose replica died with a plain-text 500: tried again, as every call may
    be; the service's own 500 (JSON, a bug) is raised at once."""
    base, _ = service
    died = Outage(down=1, answer=httpx.Response(500, text="The actor died unexpectedly before finishing this task."))
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, transport=died) as http:
        assert Client(base, KEY, http=http, max_wait_s=0.01).health().status == "ok" and died.seen == 2
    bug = Outage(down=1, answer=httpx.Response(500, json={"error": "internal error", "detail": "request abc"}))
    with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, transport=bug) as http:
        with pytest.raises(ServerError):
            Client(base, KEY, http=http, max_wait_s=0.01).health()
        assert bug.seen == 1


def test_an_answer_that_is_not_this_apis_is_the_clients_own_error(service):
    base, _ = service
    for answer in (httpx.Response(200, text="<html>sign in to the proxy</html>"), httpx.Response(200, json=[1, 2])):
        proxy = Outage(down=1, answer=answer)
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, transport=proxy) as http:
            with pytest.raises(ServerError, match="not this API's answer"):
                Client(base, KEY, http=http).identities()
    with pytest.raises(ValueError, match="0 or more"):
        Client(base, KEY, retries=-1)


def test_the_async_client_answers_as_the_sync_one(service):
    base, _ = service

    async def run():
        async with AsyncClient(base, KEY) as api:
            await api.enroll("erin", [png(5)])
            answers = await asyncio.gather(*(api.search(png(5, n)) for n in range(1, 4)))
            with pytest.raises(NotFound):
                await api.identity("nobody")
            return answers

    for [face] in asyncio.run(run()):
        assert face.identity == "erin"
