"""A gallery made with a box-crop model moved to a five-point model (jobs/pipelines/reembed.py) on real faces
(LFW-gray, YuNet, the shared MobileFaceNet behind its crop box, then aligned), on Milvus Lite: ingested photos are
detected again inside the old model's box, API enrollments carry the landmarks found when they were archived, a
photo whose face cannot be found refuses the switch, and the dry run predicts the run to the face.
Skipped when ../shared is absent."""

from __future__ import annotations

import httpx
import pytest

from embedder.archiving import decode_with_face
from embedder.faces import FacePolicy
from indexer.archive import FaceArchive
from indexer.galleries import Galleries
from indexer.store import FaceIndex, connect
from jobs.api.app import create_app
from jobs.pipelines.ingest import ingest
from jobs.pipelines.reembed import FacesLeftBehind, reembed
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.conftest import YUNET_DEFAULT
from tests.helpers import WRITE_ENTRY, W, encode, lfw_tree, live_app

INGESTED = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon")
ENROLLED = ("Hugo_Chavez", "Jean_Chretien")  # over HTTP, with a detector configured: landmarks archived


def names(index: FaceIndex, people) -> dict[int, str]:
    return {int(r["id"]): r["identity"] for name in people for r in index.faces_of(name)}


@pytest.mark.slow
@pytest.mark.stores("lite")
def test_a_box_crop_gallery_moves_to_a_five_point_model_face_by_face(ray_local, milvus_uri, collection_name,
                                                                     tmp_path, shared_data, shared_models, yunet,
                                                                     lfw_image, mobilefacenet_box,
                                                                     mobilefacenet_aligned):
    detector = shared_models / "yunet" / YUNET_DEFAULT
    archive = str(tmp_path / "archive")
    # a photo without a face too: a box-crop model embeds anything
    tree = lfw_tree(tmp_path / "photos", shared_data, INGESTED, faceless="Nobody", faceless_size=(250, 250))
    made = ingest(tree, mobilefacenet_box, milvus=milvus_uri, gallery=collection_name, archive=archive,
                  index_type="FLAT")  # no detector: the archive keeps photos without their landmarks
    assert made.embedded == 13 and not made.skipped

    settings = Settings(model=mobilefacenet_box, milvus_uri=milvus_uri, gallery=collection_name,
                        archive_uri=archive, detector=detector, api_keys=WRITE_ENTRY, _env_file=None)
    with live_app(create_app(settings)) as base, httpx.Client(base_url=base, timeout=60, headers=W) as api:
        for name in ENROLLED:
            answer = api.post(f"/v1/identities/{name}/faces",
                              files=[("images", ("p.jpg", encode(lfw_image(name, 1), "JPEG"), "image/jpeg"))])
            assert answer.status_code == 201, answer.text
        assert api.delete("/v1/identities/Ariel_Sharon").json()["deleted_faces"] == 2
    kept = FaceArchive(archive, collection_name)
    located = {e.identity: decode_with_face(e.image)[1] is not None for e in kept.entries()}
    assert located == {**dict.fromkeys(INGESTED[:-1] + ("Nobody",), False), **dict.fromkeys(ENROLLED, True)}
    client = connect(milvus_uri)
    galleries = Galleries(client, collection_name)
    source = galleries.serving()
    before = names(FaceIndex(client, source), INGESTED + ENROLLED + ("Nobody",))
    assert len(before) == 13

    policy = FacePolicy(yunet)
    common = {"milvus": milvus_uri, "gallery": collection_name, "archive": archive, "policy": policy,
              "grace_s": 0, "index_type": "FLAT"}
    dry = reembed(str(mobilefacenet_aligned), dry_run=True, **common)
    assert (dry.to_embed, dry.embedded, dry.left_behind, dry.kinds, dry.refused_kinds) == (13, 12, 1, {"photo": 13},
                                                                                           {})
    [(wall, identity, _, reason)] = dry.skipped
    assert identity == "Nobody" and "no face found inside the crop box" in reason
    assert galleries.serving() == source and len(galleries.collections()) == 1  # the dry run made nothing

    with pytest.raises(FacesLeftBehind, match="1 face"):  # known only by reading: found by the copy's end
        reembed(str(mobilefacenet_aligned), **common)
    assert galleries.serving() == source  # refused: the gallery still answers from the old model
    refused = FaceIndex(client, [c.name for c in galleries.collections() if c.name != source][0])
    assert refused.count() == dry.embedded == 12 and wall not in set(refused.iter_ids())

    moved = reembed(str(mobilefacenet_aligned), allow_missing=True, **common)
    assert moved.switched and moved.already_there == 12 and moved.left_behind == 1 and moved.in_target == 12
    new = IdentityService.open(Settings(model=mobilefacenet_aligned, milvus_uri=milvus_uri,
                                        gallery=collection_name, archive_uri=archive, detector=detector,
                                        _env_file=None))
    assert names(new.index, INGESTED + ENROLLED + ("Nobody",)) == {f: n for f, n in before.items() if f != wall}
    assert new.index.faces_of("Ariel_Sharon") == []  # deleted over HTTP before the upgrade: stays deleted
    for name in INGESTED[:3] + ENROLLED[:1]:  # other photos of the people find them through the new model
        [[answer]] = new.identify([encode(lfw_image(name, 3), "JPEG")], select="largest")
        assert answer.decision.identity == name and answer.decision.is_match, (name, answer.decision)

    # back to the box-crop model: the face enrolled by the five-point model is archived aligned, which no crop box
    # can read honestly: refused before any work, by the dry run and the run alike
    new.enroll("Tony_Blair", [("t.jpg", encode(lfw_image("Tony_Blair", 3), "JPEG"))])
    back = reembed(str(mobilefacenet_box), dry_run=True, **common)
    assert list(back.refused_kinds) == ["aligned"] and back.kinds == {"aligned": 1}  # the 12 others: still in A
    assert (back.already_there, back.embedded, back.left_behind) == (12, 0, 1)
    assert "archived aligned" in back.skipped[0][3]
    with pytest.raises(FacesLeftBehind, match="1 face.*archived aligned for a five-point model"):
        reembed(str(mobilefacenet_box), **common)
    assert galleries.serving() == moved.target and len(galleries.collections()) == 2  # nothing made, nothing moved
    new.close()
    client.close()
