"""Raw photos through the API over real HTTP: YuNet finds and aligns real faces (LFW-gray), the shared MobileFaceNet
embeds them, Milvus Lite holds the gallery. Group photos, no face, a photo on its side, faces below the quality gate.
Skipped when ../shared is absent."""

import httpx
import pytest

from jobs.api.app import create_app
from jobs.settings import Settings
from tests.conftest import YUNET_DEFAULT
from tests.helpers import WRITE_ENTRY, W, blurred, encode, group_photo, live_app, no_face, paste, sideways

PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")  # enrolled with photo 1, probed with others


@pytest.fixture(scope="module")
def api(tmp_path_factory, mobilefacenet_aligned, shared_models, lfw_image):
    settings = Settings(model=mobilefacenet_aligned, api_keys=WRITE_ENTRY,
                        milvus_uri=str(tmp_path_factory.mktemp("faces") / "faces.db"),
                        detector=shared_models / "yunet" / YUNET_DEFAULT)
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60, headers=W) as client:
        for name in PEOPLE:
            assert enroll(client, name, encode(lfw_image(name, 1), "JPEG")).status_code == 201
        yield client


@pytest.fixture(scope="module")
def group(lfw_image) -> bytes:
    return encode(group_photo([lfw_image(name, 2) for name in PEOPLE]))


def enroll(api, identity, image: bytes, **form):
    return api.post(f"/v1/identities/{identity}/faces", files=[("images", ("photo.png", image, "image/png"))],
                    data=form or None)


def search(api, image: bytes, **form):
    return api.post("/v1/search", files={"image": ("probe.png", image, "image/png")}, data=form or None)


def test_a_group_photo_answers_each_face(api, group):
    response = search(api, group)
    assert response.status_code == 200, response.text
    faces = sorted(response.json()["faces"], key=lambda f: f["face"]["box"][0])
    assert [f["identity"] for f in faces] == list(PEOPLE) and all(f["match"] for f in faces)
    for n, answer in enumerate(faces):
        x1, y1, x2, y2 = answer["face"]["box"]
        assert 0 <= x1 < x2 <= 940 and 0 <= y1 < y2 <= 400
        assert 10 + 310 * n < (x1 + x2) / 2 < 310 + 310 * n  # inside the photo it was pasted from
        assert answer["score"] >= answer["threshold"] == pytest.approx(0.35)
        assert len(answer["face"]["landmarks"]) == 5 and answer["face"]["detection_score"] > 0.75
        assert answer["face"]["rotation"] == 0
        quality = answer["face"]["quality"]
        assert quality["passed"] and quality["reasons"] == [] and quality["face_px"] > 60 and quality["eye_px"] > 20
        assert quality["sharpness"] > 25
    [largest] = search(api, group, faces="largest").json()["faces"]
    assert largest["identity"] in PEOPLE


def test_an_image_without_a_face_is_422(api):
    response = search(api, encode(no_face()))
    assert response.status_code == 422
    assert response.json()["error"] == "no face" and "no face" in response.json()["detail"]


def test_every_refused_photo_of_an_enrollment_is_named_with_its_reason(api, lfw_image, group):
    """Nothing is enrolled while one photo is bad, and the answer names each bad one (it named the first only, so a
    caller found them one request at a time)."""
    good = encode(lfw_image("Gerhard_Schroeder", 1), "JPEG")
    files = [("images", (name, data, "image/png")) for name, data in
             (("good.jpg", good), ("wall.png", encode(no_face())), ("group.png", group), ("cut.jpg", good[:200]))]
    answer = api.post("/v1/identities/Gerhard_Schroeder/faces", files=files)
    assert answer.status_code == 400, answer.text  # three kinds of refusal: bad input
    detail = answer.json()["detail"]
    assert detail.startswith("3 of 4 photos refused, nothing enrolled: wall.png: no face")
    assert "group.png: 3 faces in the image" in detail and "cut.jpg: " in detail and "good.jpg" not in detail
    assert api.get("/v1/identities/Gerhard_Schroeder").status_code == 404
    walls = [("images", (f"wall{n}.png", encode(no_face()), "image/png")) for n in (1, 2)]
    both = api.post("/v1/identities/Gerhard_Schroeder/faces", files=[files[0], *walls])
    assert both.status_code == 422 and both.json()["error"] == "no face"  # one kind: its own status
    assert both.json()["detail"].startswith("2 of 3 photos refused, nothing enrolled: wall1.png: no face")


def test_a_photo_on_its_side_is_found_and_says_how_it_was_turned(api, lfw_image):
    [face] = search(api, encode(sideways(lfw_image("Colin_Powell", 3)))).json()["faces"]
    assert face["face"]["rotation"] == 270  # embedder/detect.py: turned 270 ccw, the sideways photo stands upright
    assert face["identity"] == "Colin_Powell" and face["match"]


def test_enrolling_a_group_photo_needs_a_choice(api, group):
    response = enroll(api, "crowd", group)
    assert response.status_code == 422
    assert response.json()["error"] == "too many faces" and "3 faces" in response.json()["detail"]
    everyone = enroll(api, "crowd", group, faces="all")  # three people under one name: never a choice
    assert everyone.status_code == 422 and "body.faces" in everyone.json()["detail"]
    try:
        known = enroll(api, "crowd", group, faces="largest")  # the largest face is someone enrolled already
        assert known.status_code == 409 and any(f"'{name}'" in known.json()["detail"] for name in PEOPLE)
        chosen = enroll(api, "crowd", group, faces="largest", proceed="true")
        assert chosen.status_code == 201 and len(chosen.json()["face_ids"]) == 1
        [stored] = api.get("/v1/identities/crowd").json()["faces"]
        assert stored["metadata"]["face"]["quality"]["passed"] and len(stored["metadata"]["face"]["box"]) == 4
        # the answer says which face of the photo it took
        assert chosen.json()["boxes"] == [[round(v, 1) for v in stored["metadata"]["face"]["box"]]]
    finally:
        api.delete("/v1/identities/crowd")


@pytest.mark.parametrize("kind", ["small", "blurred"])
def test_a_face_below_the_quality_gate_is_refused_unless_overridden(api, lfw_image, kind):
    photo = lfw_image("Gerhard_Schroeder", 2)
    if kind == "small":  # the face box about 25 px on a 400x300 canvas: findable, not recognisable
        image, reason = paste((300, 400), [photo], [(150, 100)], scale=0.25), "px < 32 px"
    else:
        image, reason = blurred(photo, 3), "blurred: sharpness"
    refused = enroll(api, "below_gate", encode(image))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "no face" and reason in refused.json()["detail"]
    try:
        assert enroll(api, "below_gate", encode(image), override_quality="true").status_code == 201
        [stored] = api.get("/v1/identities/below_gate").json()["faces"]
        record = stored["metadata"]["face"]  # judged by the gate all the same, and marked as overridden
        assert record["quality_override"] and not record["quality"]["passed"]
        assert any(reason in r for r in record["quality"]["reasons"])
    finally:
        api.delete("/v1/identities/below_gate")


def test_server_timing_names_every_phase_of_an_image_search(api, lfw_image):
    response = search(api, encode(lfw_image("Tony_Blair", 3), "JPEG"))
    assert response.status_code == 200 and response.json()["faces"][0]["identity"] == "Tony_Blair"
    phases = {part.split(";")[0] for part in response.headers["server-timing"].split(", ")}
    assert {"app", "decode", "detect", "embed", "search"} <= phases
