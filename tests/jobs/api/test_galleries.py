"""Many galleries in one service: made and erased through the API, each with its own faces, and keys that reach
only their galleries. A key is answered about a gallery it may not reach exactly as about one that does not exist,
on every route, so it cannot learn which other galleries there are."""

import re

import httpx
import pytest

from jobs.api.app import create_app
from jobs.api.keys import new_key
from jobs.audit import read as read_audit
from jobs.settings import Settings
from tests.helpers import live_app, png

ADMIN_KEY, ADMIN_ENTRY = new_key("root", ["read", "write", "admin"])
A_KEY, A_ENTRY = new_key("shop", ["read", "write"], ["shop"])
B_KEY, B_ENTRY = new_key("staff", ["read", "write"], ["staff"])
A_ADMIN_KEY, A_ADMIN_ENTRY = new_key("shop_admin", ["read", "admin"], ["shop"])
ADMIN, A, B, A_ADMIN = ({"X-API-Key": k} for k in (ADMIN_KEY, A_KEY, B_KEY, A_ADMIN_KEY))
EXAMPLES = {"identity": "ann", "face": "1", "cluster": "1"}


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("galleries")
    settings = Settings(model=tiny_model_dir, milvus_uri=str(root / "g.db"), gallery="home",
                        api_keys=",".join((ADMIN_ENTRY, A_ENTRY, B_ENTRY, A_ADMIN_ENTRY)),
                        archive_uri=str(root / "archive"), audit_dir=str(root / "audit"))
    app = create_app(settings)
    with live_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        client.app, client.audit_dir = app, settings.audit_dir
        for name in ("shop", "staff"):
            assert client.post("/v1/galleries", json={"name": name}, headers=ADMIN).status_code == 201
        yield client


def enroll(api, gallery, identity, image, key):
    files = [("images", ("p.png", image, "image/png"))]
    return api.post(f"/v1/galleries/{gallery}/identities/{identity}/faces", files=files, headers=key)


def search(api, gallery, image, key):
    return api.post(f"/v1/galleries/{gallery}/search", files={"image": ("p.png", image, "image/png")}, headers=key)


def test_galleries_are_made_listed_and_read_by_the_keys_that_reach_them(api):
    made = api.post("/v1/galleries", json={"name": "shop"}, headers=ADMIN)
    assert made.status_code == 409 and "exists" in made.json()["detail"]
    twin = api.post("/v1/galleries", json={"name": "Shop"}, headers=ADMIN)
    assert twin.status_code == 409 and "differs from gallery 'shop' only in case" in twin.json()["detail"]
    assert api.post("/v1/galleries", json={"name": "bad__name"}, headers=ADMIN).status_code == 400
    slashed = api.delete("/v1/galleries/..%2F", params={"erase": 0}, headers=ADMIN)  # quoted as sent
    assert slashed.status_code in (400, 404, 422) and "../" in slashed.text and "\\u001f" not in slashed.text
    other_model = api.post("/v1/galleries", json={"name": "x", "model": "someone-else:1"}, headers=ADMIN)
    assert other_model.status_code == 400 and "this service runs model" in other_model.json()["detail"]
    assert api.post("/v1/galleries", json={"name": "x"}, headers=A).status_code == 403  # no admin scope
    # an admin of one gallery makes only that one: refused before anything is looked up
    assert api.post("/v1/galleries", json={"name": "staff"}, headers=A_ADMIN).status_code == 403

    listed = api.get("/v1/galleries", headers=ADMIN).json()["galleries"]
    assert [g["name"] for g in listed] == ["home", "shop", "staff"]
    assert [g["default"] for g in listed] == [True, False, False]
    assert [g["name"] for g in api.get("/v1/galleries", headers=A).json()["galleries"]] == ["shop"]
    # a page at a time, of the galleries the key reaches: the one after a key's last is not a next page for it
    first = api.get("/v1/galleries", params={"limit": 2}, headers=ADMIN).json()
    assert [g["name"] for g in first["galleries"]] == ["home", "shop"] and first["next_cursor"] == "shop"
    rest = api.get("/v1/galleries", params={"cursor": "shop", "limit": 2}, headers=ADMIN).json()
    assert [g["name"] for g in rest["galleries"]] == ["staff"] and rest["next_cursor"] is None
    assert api.get("/v1/galleries", params={"limit": 1}, headers=A).json() == {
        "galleries": [g for g in listed if g["name"] == "shop"], "next_cursor": None}
    assert api.get("/v1/galleries", params={"limit": 0}, headers=ADMIN).status_code == 422
    assert api.get("/v1/galleries", params={"cursor": "a b"}, headers=ADMIN).status_code == 422
    detail = api.get("/v1/galleries/shop", headers=A).json()
    assert detail["name"] == "shop" and detail["ready"]["gallery"] == "shop" and detail["ready"]["collection"]
    shops = api.get("/v1/galleries/shop/ready", headers=A).json()
    assert shops["gallery"] == "shop"
    default = api.get("/v1/ready", headers=ADMIN).json()  # the same fields for the default gallery, nulls and all
    assert set(default) == set(shops) and default["calibration"] is None
    assert api.get("/v1/ready", headers=A).json() == {"status": "ready"}  # the default gallery is not shop's key's


def test_each_gallery_answers_from_its_own_faces_only(api):
    assert enroll(api, "shop", "ann", png(1), A).status_code == 201
    assert enroll(api, "staff", "bob", png(2), B).status_code == 201
    assert enroll(api, "staff", "ann_in_staff", png(1, 1), B).status_code == 201  # the same person, other gallery

    found = search(api, "shop", png(1, 3), A).json()["faces"][0]
    assert found["identity"] == "ann" and all(c["identity"] == "ann" for c in found["candidates"])
    stranger = search(api, "shop", png(2, 3), A).json()["faces"][0]  # bob is known in staff only
    assert not stranger["match"] and all(c["identity"] != "bob" for c in stranger["candidates"])
    assert search(api, "staff", png(2, 3), B).json()["faces"][0]["identity"] == "bob"
    assert [i["identity"] for i in api.get("/v1/galleries/shop/identities", headers=A).json()["identities"]] == ["ann"]
    assert api.get("/v1/identities", headers=ADMIN).json()["identities"] == []  # the default gallery: empty

    face = enroll(api, "shop", "ann", png(1), A).json()["face_ids"][0]
    assert api.get(f"/v1/galleries/shop/faces/{face}/image", headers=A).status_code == 200
    assert api.get(f"/v1/galleries/staff/faces/{face}/image", headers=B).status_code == 404  # not staff's face

    records = list(read_audit(api.audit_dir))
    enrolled = {(r["gallery"], r["identity"]) for r in records if r.get("action") == "enroll"}
    assert {("shop", "ann"), ("staff", "bob"), ("staff", "ann_in_staff")} <= enrolled
    assert {r["gallery"] for r in records if r.get("action") == "gallery_create" and r["status"] == 201} == {"shop",
                                                                                                           "staff"}


def test_every_route_answers_a_gallery_out_of_reach_as_one_that_does_not_exist(api):
    templates = [(path, method.upper()) for path, operations in api.app.openapi()["paths"].items()
                 for method in operations if path.startswith("/v1/galleries/{gallery}")]
    assert len(templates) >= 25  # every face route and the gallery's own, not a few
    for template, method in templates:
        answers = {}
        for gallery in ("staff", "nowhere"):
            path = template.replace("{gallery}", gallery)
            path = re.sub(r"\{(\w+)\}", lambda m: EXAMPLES[m.group(1)], path)
            answer = api.request(method, path, headers=A_ADMIN if method == "DELETE" else A)
            assert answer.status_code == 404, f"{method} {path}: {answer.status_code} {answer.text}"
            assert answer.json() == {"error": "not found", "detail": f"gallery {gallery!r} not found"}
            timing = answer.headers.get("server-timing", "")
            assert not re.search(r"decode|detect|embed|search", timing), f"{method} {path}: {timing}"
            answers[gallery] = sorted(answer.headers)
        assert answers["staff"] == answers["nowhere"], f"{method} {template}: the headers tell the two apart"
    # the default gallery's routes are the default gallery's: a key for shop does not reach them either
    for method, path in (("GET", "/v1/identities"), ("POST", "/v1/search/embedding"), ("GET", "/v1/calibration")):
        assert api.request(method, path, headers=A).json()["detail"] == "gallery 'home' not found"
    # a path no route takes is no gallery's: a typo is answered as one, whichever galleries the key reaches
    for path in ("/nonexistent", "/v1/identities/x/bogus", "/v1/galleries/shop/bogus"):
        answer = api.get(path, headers=A)
        assert answer.status_code == 404 and "gallery" not in answer.json()["detail"], (path, answer.text)
    sneaked = api.get("/v1/galleries/shop%2F..%2Fstaff/identities", headers=A)  # its name as sent, no encoding
    assert sneaked.status_code == 404 and sneaked.json()["detail"] == "gallery 'shop/../staff' not found"


def test_a_gallery_is_erased_only_with_its_count_and_then_gone_everywhere(api):
    assert api.post("/v1/galleries", json={"name": "temp"}, headers=ADMIN).status_code == 201
    assert enroll(api, "temp", "cat", png(7), ADMIN).status_code == 201
    assert enroll(api, "temp", "dan", png(8), ADMIN).status_code == 201
    refused = api.delete("/v1/galleries/temp", headers=ADMIN)
    assert refused.status_code == 400 and "holds 2 faces" in refused.json()["detail"] and "erase=2" in refused.text
    assert api.delete("/v1/galleries/temp", params={"erase": 3}, headers=ADMIN).status_code == 400
    assert search(api, "temp", png(7, 2), ADMIN).json()["faces"][0]["identity"] == "cat"  # nothing erased yet

    erased = api.delete("/v1/galleries/temp", params={"erase": 2}, headers=ADMIN)
    assert erased.status_code == 200 and erased.json()["faces"] == 2 and erased.json()["archived"] == 2
    assert api.get("/v1/galleries/temp", headers=ADMIN).status_code == 404
    assert search(api, "temp", png(7, 2), ADMIN).status_code == 404
    assert "temp" not in [g["name"] for g in api.get("/v1/galleries", headers=ADMIN).json()["galleries"]]
    assert api.delete("/v1/galleries/home", headers=ADMIN).status_code == 409  # the service's default: not here
    erasures = [r for r in read_audit(api.audit_dir) if r.get("action") == "gallery_delete"]
    assert [(r["gallery"], r["faces"], r["status"]) for r in erasures if r["status"] == 200] == [("temp", 2, 200)]
    assert [(r["gallery"], r["status"]) for r in erasures][-4:] == [("temp", 400), ("temp", 400), ("temp", 200),
                                                                     ("home", 409)]  # refusals too, by their action


def test_one_gallery_made_or_erased_by_several_requests_at_once_is_made_or_erased_once(api):
    """Six creates of one name at once: one 201, five 409 "exists already" (they met each other half-way and
    answered a 400 about a store call and 503s); then four deletes at once: one erases it, three are told it is
    not there."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda _: api.post("/v1/galleries", json={"name": "crowd"}, headers=ADMIN), range(6)))
    assert sorted(r.status_code for r in made) == [201, 409, 409, 409, 409, 409]
    assert all("exists already" in r.json()["detail"] for r in made if r.status_code == 409)
    with ThreadPoolExecutor(4) as pool:
        gone = list(pool.map(lambda _: api.delete("/v1/galleries/crowd", params={"erase": 0}, headers=ADMIN),
                             range(4)))
    assert sorted(r.status_code for r in gone) == [200, 404, 404, 404]
    assert all(r.json()["detail"] == "gallery 'crowd' not found" for r in gone if r.status_code == 404)
