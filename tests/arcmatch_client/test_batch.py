"""Batch enrollment through the client: 500 photos from a folder (one sub-folder per person) with a progress
bar, a refused photo reported with its reason while the rest go in, and part of the batch again adding nothing."""

import asyncio

import pytest
from PIL import Image

from arcmatch_client import AsyncClient, Client, enroll_batch, enroll_batch_async, photos_of
from arcmatch_client.errors import BadInput, NotFound, Unauthorized
from jobs.api.app import create_app
from jobs.api.keys import new_key
from jobs.settings import Settings
from tests.helpers import live_app, png

KEY, ENTRY = new_key("batch", ["read", "write", "admin"])


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("batch")
    settings = Settings(model=tiny_model_dir, milvus_uri=str(root / "b.db"), gallery="batch", api_keys=ENTRY,
                        archive_uri=str(root / "archive"))
    with live_app(create_app(settings)) as url:
        yield url


def test_five_hundred_photos_from_a_folder_then_part_of_them_again(base, tmp_path, capsys):
    folder = tmp_path / "people"
    for person in range(125):
        (folder / f"person {person:03d}").mkdir(parents=True)
        for n in range(4):
            (folder / f"person {person:03d}" / f"{n}.png").write_bytes(png(1000 + person, n))
    (folder / "person 000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "person 001" / "2019").mkdir()
    (folder / "person 001" / "3.png").rename(folder / "person 001" / "2019" / "3.png")  # still theirs
    (folder / "loose.png").write_bytes(png(1001))  # in nobody's folder: reported, not sent
    (folder / "person 002" / "notes.txt").write_text("met at the fair")  # no photo: left alone, as ingest does
    assert len(photos_of(folder)) == 502

    with Client(base, KEY) as api:
        report = enroll_batch(api, folder, workers=4, proceed=True)  # trusted labels: a bulk import
        assert report.photos == 500 and report.faces == 500
        assert [(f[1], f[2]) for f in report.failed] == [("person 000", "bad input"), ("", "bad input")]
        assert "broken.png" in report.failed[0][0] and "does not decode" in report.failed[0][3]
        assert "loose.png" in report.failed[1][0] and "not in a person's folder" in report.failed[1][3]
        assert "502/502" in capsys.readouterr().err  # the progress bar went to the end
        assert sorted(f.source for f in api.identity("person 001").faces) == [f"api:{n}.png" for n in range(4)]

        some = tmp_path / "again.csv"  # a tenth of the batch again (after a crash, say): nothing is added twice
        some.write_text("identity,path\n" + "".join(f"person {p:03d},people/person {p:03d}/{n}.png\n"
                                                    for p in range(2, 27) for n in range(4)))
        again = enroll_batch(api, some, workers=4, proceed=True, progress=False)
        assert again.photos == 100 and not again.failed
        listed, cursor = [], None
        while True:
            page = api.identities(cursor=cursor, limit=1000)
            listed += page.identities
            if (cursor := page.next_cursor) is None:
                break
        assert len(listed) == 125 and {i.faces for i in listed} == {4}  # every photo once, none twice


def test_a_manifest_through_the_async_client_and_what_it_refuses(base, tmp_path):
    (tmp_path / "photos").mkdir()
    for n in range(4):
        (tmp_path / "photos" / f"{n}.png").write_bytes(png(2000, n))
    Image.new("L", (32, 32), 128).save(tmp_path / "photos" / "wall.png")  # one flat colour: no face in it
    (tmp_path / "list.csv").write_text("identity,path\n" + "".join(f"zed,photos/{n}.png\n" for n in range(3)) +
                                      "yan,photos/3.png\nzed,photos/missing.png\n,photos/0.png\n"
                                      "yan,photos/wall.png\n")

    async def run():  # a gallery of its own: the people of the other test are not in it
        async with AsyncClient(base, KEY) as api:
            await api.create_gallery("manifest")
            gallery = api.gallery("manifest")
            await gallery.enroll("zed", [png(2000, 5)])  # zed is known before the batch: yan's photo is zed's
            return await enroll_batch_async(gallery, tmp_path / "list.csv", concurrency=2, progress=False)

    report = asyncio.run(run())
    assert report.photos == 3
    refused = {path.rsplit("/", 1)[1]: kind for path, _, kind, _ in report.failed}
    # someone else's face, no file, no name, no face (the answer's own name for it, finer than its status's)
    assert refused == {"3.png": "conflict", "missing.png": "bad input", "0.png": "bad input", "wall.png": "no face"}
    assert [detail for path, _, _, detail in report.failed if path.endswith("missing.png")] == [
        f"{tmp_path / 'photos' / 'missing.png'}: no such file"]
    assert [detail for _, who, _, detail in report.failed if not who] == ["line 7 of the manifest has no identity: "
                                                                           "whose is it?"]
    with pytest.raises(BadInput, match="columns identity and path"):
        (tmp_path / "bad.csv").write_text("name,file\n")
        photos_of(tmp_path / "bad.csv")
    with pytest.raises(NotFound):
        photos_of(tmp_path / "nowhere")


def test_a_wrong_key_or_a_gallery_not_there_stops_the_batch_in_one_error(base, tmp_path):
    """Every photo would hear the same answer, each after its retries: the batch stops at the first, says how far
    it got, and the CLI exits with that error's code (not 3, "finished with photos refused")."""
    for person in range(10):
        (tmp_path / "people" / f"p{person}").mkdir(parents=True)
        (tmp_path / "people" / f"p{person}" / "a.png").write_bytes(png(3000 + person))

    class Counted:  # the real client, its enrollments counted
        def __init__(self, client) -> None:
            self.client, self.calls = client, 0

        def enroll(self, *args, **kwargs):
            self.calls += 1
            return self.client.enroll(*args, **kwargs)

    with Client(base, "am_not_a_key") as api:
        counted = Counted(api.gallery("batch"))
        with pytest.raises(Unauthorized, match="the batch stopped: 0 photos enrolled, 0 refused, 10 left"):
            enroll_batch(counted, tmp_path / "people", workers=2, progress=False)
    assert counted.calls <= 3  # the two in flight, and at most one taken up as they failed

    async def elsewhere():
        async with AsyncClient(base, KEY) as api:
            return await enroll_batch_async(api.gallery("nowhere"), tmp_path / "people", concurrency=2,
                                            progress=False)

    with pytest.raises(NotFound, match="gallery 'nowhere' not found.*the batch stopped") as stopped:
        asyncio.run(elsewhere())
    assert stopped.value.report.photos == 0
