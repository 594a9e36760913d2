"""A gallery made again from its face archive (jobs/pipelines/restore.py) on a real local Ray and Milvus Lite:
moved from one store and archive to another with every face, deleted faces staying deleted; run again it adds
nothing; a store that lost a face gets it back."""

from __future__ import annotations

import pytest

from common.errors import Conflict, NotFound
from indexer.archive import FaceArchive
from indexer.store import FaceIndex, connect
from jobs.pipelines.ingest import ingest
from jobs.pipelines.restore import restore
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.helpers import TINY_THRESHOLD, png
from trainer.synthetic import write_dataset


def faces_of(uri: str, gallery: str) -> dict[int, tuple[str, str]]:
    client = connect(uri)
    index = FaceIndex(client, gallery)
    out = {face: (row.identity, row.source) for face, row in index.rows(list(index.iter_ids())).items()}
    client.close()
    return out


@pytest.mark.slow
def test_a_gallery_moves_to_another_store_with_every_face_and_its_deletions(ray_local, tmp_path, tiny_model_dir,
                                                                            other_model_dir):
    tree, dev, dev_archive = tmp_path / "people", str(tmp_path / "dev.db"), str(tmp_path / "dev.archive")
    write_dataset(tree, range(3), 2, size=32)
    ingest(tree, tiny_model_dir, milvus=dev, gallery="shop", batch_size=4, index_type="FLAT", archive=dev_archive)
    service = IdentityService.open(Settings(model=tiny_model_dir, milvus_uri=dev, gallery="shop",
                                            archive_uri=dev_archive, _env_file=None))
    enrolled = service.enroll("ann", [("a1.png", png(11)), ("a2.png", png(11, 1))]).face_ids  # through the API only
    # a photo of the tree enrolled through the API as well: the face it already is, not a second one
    [ingested] = [face for face, (_, source) in faces_of(dev, "shop").items() if source == "person_00000/000.png"]
    photo = (tree / "person_00000" / "000.png").read_bytes()
    assert service.enroll("person_00000", [("000.png", photo)]).face_ids == [ingested]
    service.delete_face("ann", enrolled[1])
    service.delete_identity("person_00002")  # erased: must not come back anywhere
    service.close()
    before = faces_of(dev, "shop")
    assert len(before) == 5 and {identity for identity, _ in before.values()} == {"ann", "person_00000",
                                                                                    "person_00001"}

    prod, prod_archive = str(tmp_path / "prod.db"), str(tmp_path / "prod.archive")
    kwargs = {"milvus": prod, "gallery": "shop", "archive": dev_archive, "archive_to": prod_archive,
              "index_type": "FLAT", "batch_size": 4}
    dry = restore(str(tiny_model_dir), dry_run=True, **kwargs)
    assert (dry.archived_live, dry.embedded, dry.archived, dry.skipped) == (5, 5, 5, [])
    assert not (tmp_path / "prod.db").exists() and not (tmp_path / "prod.archive").exists()  # the dry run made nothing

    summary = restore(str(tiny_model_dir), **kwargs)
    assert (summary.embedded, summary.in_store, summary.made_alias, summary.skipped) == (5, 5, True, [])
    assert summary.threshold == TINY_THRESHOLD  # the model's, as ingest gave the gallery
    assert faces_of(prod, "shop") == before  # every face, under its own id, identity and source
    moved = FaceArchive(prod_archive, "shop")
    assert moved.live_versions().keys() == before.keys()
    searched = IdentityService.open(Settings(model=tiny_model_dir, milvus_uri=prod, gallery="shop",
                                             archive_uri=prod_archive, _env_file=None))
    assert searched.identify([png(11, 2)], select="largest")[0][0].decision.identity == "ann"
    searched.close()

    # the deletions came along: ingesting the tree into the new store leaves the erased person out (deleted_ids)
    assert set(FaceArchive(dev_archive, "shop").deleted_ids()) <= set(moved.deleted_ids())

    # a store that lost a face (a volume restored from an old snapshot, say) gets it back, and only it: a re-run
    # (after a kill, say) writes nothing twice
    client = connect(prod)
    lost = next(iter(before))
    FaceIndex(client, "shop").delete_ids([lost])
    client.close()
    healed = restore(str(tiny_model_dir), **kwargs)
    assert (healed.already_there, healed.embedded, healed.in_store, healed.archived, healed.made_alias) == (
        4, 1, 5, 0, False)
    assert faces_of(prod, "shop") == before
    with pytest.raises(Conflict, match="served by model"):  # another model: a re-embed's work, not a restore's
        restore(str(other_model_dir), **kwargs)
    with pytest.raises(NotFound, match="holds no faces of gallery 'nobody'; it holds 'shop' \\(--gallery\\)"):
        restore(str(tiny_model_dir), **{**kwargs, "gallery": "nobody"})
    # an archive named wrong: nothing there, or one gallery's folder inside it
    with pytest.raises(NotFound, match="no archive at"):
        restore(str(tiny_model_dir), **{**kwargs, "archive": str(tmp_path / "nowhere")})
    with pytest.raises(NotFound, match="is the folder of one gallery, 'shop', inside an archive: give the archive"):
        restore(str(tiny_model_dir), **{**kwargs, "archive": f"{dev_archive}/shop"})
