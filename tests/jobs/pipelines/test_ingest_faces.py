"""Ingestion of raw photos (LFW-gray) with YuNet and the shared MobileFaceNet, with real Ray Data into Milvus Lite:
photos become faces on the decode tasks, skipped photos say why, a group photo gives a row per face with `all`
(faces nobody has named; under a name it is refused), and the stored vectors are those of direct inference.
Skipped when ../shared is absent."""

from dataclasses import replace

import numpy as np
import pytest

from common.errors import BadInput
from embedder.embed import open_embedder
from embedder.faces import FacePolicy
from embedder.preprocess import load_rgb
from indexer.ids import face_id
from indexer.store import FaceIndex, connect
from jobs.pipelines.ingest import ingest
from jobs.pipelines.report import reasons
from tests.helpers import encode, group_photo, lfw_tree

PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")


@pytest.fixture
def photos(tmp_path, shared_data, lfw_image):
    """people x 2 raw LFW photos (linked, not copied), a photo without a face, and a group photo of the three."""
    root = lfw_tree(tmp_path / "photos", shared_data, PEOPLE, faceless="nobody")
    (root / "crowd").mkdir()
    (root / "crowd" / "group.png").write_bytes(encode(group_photo([lfw_image(name, 3) for name in PEOPLE])))
    return root


@pytest.mark.slow
def test_raw_photos_become_faces(ray_local, photos, tmp_path, mobilefacenet_aligned, yunet):
    uri = str(tmp_path / "faces.db")
    one = FacePolicy(yunet, select="one")
    kwargs = {"milvus": uri, "batch_size": 4, "index_type": "FLAT"}
    summary = ingest(photos, mobilefacenet_aligned, gallery="one", policy=one, errors_csv=tmp_path / "e.csv",
                     **kwargs)
    assert (summary.seen, summary.embedded, summary.rows_in_collection) == (8, 6, 6)
    why = dict(summary.skipped)
    assert why["nobody/wall.png"].startswith("no face")
    assert why["crowd/group.png"] == "3 faces in the image, expected exactly one"
    assert set(reasons(summary.skipped)) == {"no face found in the image", "3 faces in the image, expected exactly one"}
    assert any("skipped (no face" in line for line in summary.lines())
    assert "3 faces" in (tmp_path / "e.csv").read_text()

    with pytest.raises(BadInput, match="only for faces nobody has named"):  # the group would all be 'crowd'
        ingest(photos, mobilefacenet_aligned, gallery="all", policy=replace(one, select="all"), **kwargs)
    everyone = ingest(photos, mobilefacenet_aligned, gallery="all", policy=replace(one, select="all"),
                      unlabelled=True, **kwargs)
    assert everyone.embedded == 9 and everyone.rows_in_collection == 9  # the group photo gives three rows

    embedder = open_embedder(mobilefacenet_aligned)
    client = connect(uri)
    try:
        index = FaceIndex(client, "all")
        group_ids = [face_id(f"unlabelled:crowd/group.png#{n}") for n in range(3)]  # keyed apart from named ones
        colin = face_id("unlabelled:Colin_Powell/2.jpg")
        stored = index.vectors([*group_ids, colin])
        assert set(stored) == {*group_ids, colin}
        [row] = [r for r in FaceIndex(client, "one").faces_of("Colin_Powell") if r["source"] == "Colin_Powell/2.jpg"]
        record = row["metadata"]["face"]
        assert len(record["box"]) == 4 and record["detection_score"] > 0.75 and record["rotation"] == 0
        assert record["quality"]["passed"] and len(record["landmarks"]) == 5
        # the stored vectors are direct inference through the same policy and model
        [face] = one.prepare(load_rgb((photos / "Colin_Powell" / "2.jpg").read_bytes()), embedder.spec)
        assert float(embedder.embed(face.chip[None])[0] @ stored[colin]) > 0.999
        faces = replace(one, select="all").prepare(load_rgb((photos / "crowd" / "group.png").read_bytes()),
                                                   embedder.spec)
        direct = embedder.embed(np.stack([f.chip for f in faces]))
        cosines = np.einsum("nd,nd->n", np.stack([stored[i] for i in group_ids]), direct)  # face #n and direct face n
        np.testing.assert_allclose(cosines, 1.0, atol=1e-3)
    finally:
        client.close()


def test_a_group_photo_counts_once_in_the_bar_by_its_first_face(photos, mobilefacenet_aligned, yunet):
    from jobs.pipelines.ingest import decode_batch, photos_in

    spec = open_embedder(mobilefacenet_aligned).spec
    names = ["crowd/group.png", "Colin_Powell/1.jpg"]
    batch = {"uri": np.asarray([str(photos / n) for n in names], dtype=object),
             "face_key": np.asarray(names, dtype=object), "identity": np.asarray(["", ""], dtype=object),
             "source": np.asarray(names, dtype=object), "metadata": np.asarray(["{}", "{}"], dtype=object)}
    decoded = decode_batch(batch, spec, FacePolicy(yunet, select="all"))
    assert list(decoded["face_key"]) == ["crowd/group.png#0", "crowd/group.png#1", "crowd/group.png#2",
                                         "Colin_Powell/1.jpg"]
    assert list(decoded["first_face"]) == [True, False, False, True] and photos_in(decoded) == 2
