"""The review page in a real headless browser (Chromium from Debian's packages, driven by Playwright): the key, a
search by photo drawn over the photo, naming a cluster, "not this person"; and no script error or CSP refusal."""

import io
import shutil
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from PIL import Image

from embedder.archiving import encode
from indexer.archive import ArchivedFace, FaceArchive
from indexer.galleries import Galleries
from indexer.ids import UNLABELLED
from indexer.store import FaceIndex, FaceRow, connect
from jobs.api.app import create_app
from jobs.pipelines.cluster import cluster
from jobs.settings import Settings
from tests.helpers import TINY_DIM, live_app, people, png
from tests.helpers import WRITE_ENTRY as ENTRY
from tests.helpers import WRITE_KEY as KEY

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install -y chromium (.ci/run does)")
# a page of 40-odd people fetches well over a hundred thumbnails, six at a time (Chromium's limit per host): under the
# full suite's load on two cores that outlasts Playwright's default 5 s for an expectation
playwright.expect.set_options(timeout=30_000)


def picture(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@contextmanager
def chromium(problems: list[str], height: int):
    """A page in headless Chromium whose script errors and console errors are added to `problems`."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": height})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        try:
            yield page
        finally:
            browser.close()


def signed_in(page, site: str) -> None:
    """The review page opened, with the test's key given as a person types it."""
    page.goto(f"{site}/review")
    page.fill("#key", KEY)
    page.click("#key-form button")


@pytest.fixture
def site(tmp_path, tiny_model_dir):
    uri, archive_root = str(tmp_path / "review.db"), str(tmp_path / "archive")
    settings = Settings(model=tiny_model_dir, api_keys=ENTRY, milvus_uri=uri, gallery="faces",
                        archive_uri=archive_root)
    with live_app(create_app(settings)) as base:
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}) as api:
            assert api.post("/v1/identities/ann/faces", files=[("images", ("a.png", png(1), "image/png"))]
                            ).status_code == 201
        client = connect(uri)
        index = FaceIndex(client, Galleries(client, "faces").serving())
        crowd = [FaceRow(r.source, UNLABELLED, r.vector, r.face_id) for r in people(2, 4, spread=0.2, seed=8,
                                                                                   dim=TINY_DIM)]
        archive = FaceArchive(archive_root, "faces")  # what a kept unknown face leaves: its picture, to show
        archive.write([ArchivedFace(r.face_id, UNLABELLED, r.source, "{}", "photo", encode(picture(png(20 + n))))
                       for n, r in enumerate(crowd)])
        index.upsert(crowd)
        index.flush()
        cluster(milvus=uri, root=archive_root, gallery="faces", k=6, threshold=0.6)
        client.close()
        yield base


def test_search_name_a_cluster_and_reject_a_face_in_the_browser(site, tmp_path):
    probe = tmp_path / "probe.png"
    probe.write_bytes(png(1))
    problems: list[str] = []
    with chromium(problems, 900) as page:
        page.goto(f"{site}/review")
        assert page.locator("#status").inner_text() == "enter an API key to begin"
        page.fill("#key", KEY)
        page.click("#key-form button")
        page.wait_for_selector(".cluster")
        assert page.locator(".cluster").count() == 2
        assert "(2 groups)" in page.locator("#clusters-count").inner_text()
        playwright.expect(page.locator('.cluster img[src^="blob:"]')).to_have_count(8)  # thumbnails shown

        page.set_input_files("#probe", str(probe))
        page.click("#search-form button")
        answer = page.wait_for_selector("#search-result li")
        assert answer.get_attribute("data-identity") == "ann" and answer.inner_text().startswith("ann 1.00")
        assert page.locator("#canvas").is_visible()

        first = page.locator(".cluster").first
        first.locator("input").fill("zoe")
        first.locator("button").click()
        page.wait_for_selector('.identity[data-identity="zoe"] h3:has-text("4 faces")')
        assert page.locator(".cluster").count() == 1
        assert "4 faces are now zoe" in page.locator("#status").inner_text()

        page.locator('.identity[data-identity="zoe"] button[data-reject]').first.click()
        page.wait_for_selector('.identity[data-identity="zoe"] h3:has-text("3 faces")')
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
    assert problems == []
    assert (tmp_path / "review.png").stat().st_size > 10_000


def test_the_faces_kept_from_searches_are_confirmed_strangers_in_the_browser(site, tmp_path):
    """Once the people among them are named, one button says the rest of the faces kept from searches are
    strangers; it asks first, and the faces ingested as unlabelled are left as they are."""
    client = connect(str(tmp_path / "review.db"))
    index = FaceIndex(client, Galleries(client, "faces").serving())
    kept = [FaceRow(f"search:{n:016x}#0", UNLABELLED, r.vector, r.face_id + 1000, {"expires_at": 2_000_000_000,
                                                                                  "below": 0.6})
            for n, r in enumerate(people(2, 1, spread=0.2, seed=11, dim=TINY_DIM))]
    index.upsert(kept)
    index.flush()
    client.close()
    problems: list[str] = []
    with chromium(problems, 900) as page:
        signed_in(page, site)
        page.wait_for_selector(".cluster")
        asked: list[str] = []
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        page.click("#kept-strangers")
        playwright.expect(page.locator("#kept-strangers")).to_be_enabled()
        page.on("dialog", lambda dialog: dialog.accept())
        page.click("#kept-strangers")
        playwright.expect(page.locator("#status")).to_have_text(
            "2 faces kept from searches are confirmed strangers: the next calibration counts them")
        assert asked and "Name the people you know among them first" in asked[0]
    assert problems == []
    client = connect(str(tmp_path / "review.db"))
    index = FaceIndex(client, Galleries(client, "faces").serving())
    marks = index.stored_metadata([r.face_id for r in kept] + [r.face_id for r in people(2, 4, spread=0.2, seed=8,
                                                                                         dim=TINY_DIM)])
    client.close()
    assert sorted(m.get("stranger") is True for m in marks.values()) == [False] * 8 + [True] * 2


def test_a_key_that_fails_leaves_nothing_of_the_last_one_and_a_long_name_wraps(site, tmp_path):
    long_name = "L" + "o" * 250 + "ng"  # within the 256 a name may have, and no space to break at
    with httpx.Client(base_url=site, headers={"X-API-Key": KEY}) as api:
        assert api.post(f"/v1/identities/{long_name}/faces", files=[("images", ("b.png", png(2), "image/png"))]
                        ).status_code == 201
    probe = tmp_path / "probe.png"
    probe.write_bytes(png(1))
    problems: list[str] = []
    with chromium(problems, 900) as page:
        signed_in(page, site)
        page.wait_for_selector(f'.identity[data-identity="{long_name}"]')
        page.wait_for_selector(".cluster")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1200  # the page is no wider than the window
        page.set_input_files("#probe", str(probe))
        page.click("#search-form button")
        page.wait_for_selector("#search-result li")

        page.fill("#key", "am_wrong")
        page.click("#key-form button")
        page.wait_for_selector("#status:has-text('401')")
        assert page.locator(".cluster, .identity, #search-result li").count() == 0
        assert not page.locator("#canvas").is_visible()
    assert [p for p in problems if "401" not in p] == []


def test_people_beyond_the_first_page_are_a_click_away(site):
    with httpx.Client(base_url=site, headers={"X-API-Key": KEY}, timeout=60) as api:
        for n in range(52):  # 53 people with ann: a page of 50, then 3
            assert api.post(f"/v1/identities/p{n:03d}/faces", files=[("images", ("a.png", png(300 + n), "image/png"))],
                            data={"proceed": "true"}).status_code == 201
    problems: list[str] = []
    with chromium(problems, 900) as page:
        signed_in(page, site)
        playwright.expect(page.locator(".identity")).to_have_count(50)
        assert "more to come" in page.locator("#identities-count").inner_text()
        page.click("#identities-more")
        playwright.expect(page.locator(".identity")).to_have_count(53)
        assert page.locator("#identities-more").is_hidden() and page.locator("#identities-count").inner_text() == "(53)"
    assert problems == []


def test_the_page_is_open_but_its_data_is_not(site):
    with httpx.Client(base_url=site) as anonymous:
        page = anonymous.get("/review")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert anonymous.get("/review/review.js").headers["content-type"].startswith("text/javascript")
        assert anonymous.get("/review/secrets.txt").status_code == 401  # only the page's own files are open
        assert anonymous.get("/v1/clusters").status_code == 401


@pytest.fixture
def gallery_with_findings(tmp_path, tiny_model_dir):
    from tests.jobs.api.test_gallery_health import planted_gallery

    uri, archive_root = str(tmp_path / "health.db"), str(tmp_path / "archive")
    settings = Settings(model=tiny_model_dir, api_keys=ENTRY, milvus_uri=uri, gallery="faces",
                        archive_uri=archive_root)
    with live_app(create_app(settings)) as base:
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}) as api:
            assert api.post("/v1/identities/owner/faces", files=[("images", ("o.png", png(99), "image/png"))]
                            ).status_code == 201
        planted = planted_gallery(uri, "faces")
        client = connect(uri)
        index = FaceIndex(client, Galleries(client, "faces").serving())
        rows = [r for r in index.rows([f for f, _ in index.labelled_faces()]).values() if r.identity != "owner"]
        FaceArchive(archive_root, "faces").write([  # a picture per face, for the thumbnails a person looks at
            ArchivedFace(r.face_id, r.identity, r.source, "{}", "photo", encode(picture(png(n % 40, n))))
            for n, r in enumerate(rows)])
        client.close()
        yield base, planted


def test_the_health_section_resolves_what_the_check_finds_in_the_browser(gallery_with_findings, tmp_path):
    site, planted = gallery_with_findings
    problems: list[str] = []
    with chromium(problems, 1400) as page:
        def accept(dialog) -> None:  # the merge asks first
            dialog.accept()

        page.on("dialog", accept)
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
        signed_in(page, site)
        page.click("#health-check")
        twins = '.finding.duplicate[data-first="person 7"][data-second="person 7 again"]'
        page.wait_for_selector(twins)
        assert "findings in 42 people" in page.locator("#health-count").inner_text()
        try:
            playwright.expect(page.locator(f'{twins} img[src^="blob:"]')).to_have_count(3)  # both names' faces
        except AssertionError as exc:  # what the page showed and which requests failed, for the one who reads it
            rows = page.locator(f"{twins} .who").all_inner_texts()
            raise AssertionError(f"{exc}\nrows: {rows}\nfailed requests: {missing}\nconsole: {problems}") from None
        page.screenshot(path=str(tmp_path / "health.png"), full_page=True)

        page.locator(f'{twins} button[data-distinct]').click()  # "different people"
        playwright.expect(page.locator(twins)).to_have_count(0)
        assert "are kept apart from now on" in page.locator("#status").inner_text()

        stray = f'.finding.misfit[data-face="{planted["stray"]}"]'
        page.locator(f'{stray} button[data-move="person 3"]').click()
        playwright.expect(page.locator(stray)).to_have_count(0)
        page.wait_for_selector('.identity[data-identity="person 3"] h3:has-text("2 faces")')

        pair = '.finding.duplicate[data-first="person 3"][data-second="person 5"]'
        playwright.expect(page.locator(pair)).to_have_count(0)  # the stray photo was what joined them

        outsider = f'.finding.stray[data-face="{planted["outsider"]}"]'
        playwright.expect(page.locator(f'{outsider} img[src^="blob:"]')).to_have_count(4)  # it, and person 20's
        assert page.locator(f'{outsider} button[data-confirm="{planted["outsider"]}"]').inner_text() == \
            "It is person 20"
        page.locator(f'{outsider} button[data-reject="{planted["outsider"]}"]').click()  # "Not person 20"
        playwright.expect(page.locator(outsider)).to_have_count(0)
        page.wait_for_selector('.identity[data-identity="person 20"] h3:has-text("2 faces")')

        # a wrong merge: person 8's photos under person 9, listed as two groups; one group gets its name back. The
        # merge is made behind the page's back: first the page's own requests end (a card of person 8 still
        # loading would hear 404)
        page.wait_for_load_state("networkidle")
        # and person 8's own card has its faces: under load (the suite on 2 cores) its request was still to come
        # when the page looked idle, and heard 404 after the merge
        page.wait_for_selector('.identity[data-identity="person 8"] h3:has-text("face")')
        page.wait_for_load_state("networkidle")
        with httpx.Client(base_url=site, headers={"X-API-Key": KEY}) as api:
            assert api.post("/v1/identities/person 9/merge", json={"identity": "person 8", "proceed": True}
                            ).status_code == 200
        page.remove_listener("dialog", accept)
        page.on("dialog", lambda dialog: dialog.accept("person 8" if dialog.type == "prompt" else None))
        page.click("#health-check")
        split = '.finding.split[data-identity="person 9"]'
        playwright.expect(page.locator(f'{split} img[src^="blob:"]')).to_have_count(4)  # both groups' faces
        page.locator(f'{split} button[data-split="1"]').click()
        playwright.expect(page.locator(split)).to_have_count(0)
        assert "2 faces moved from person 9 to person 8" in page.locator("#status").inner_text()
        page.wait_for_selector('.identity[data-identity="person 8"] h3:has-text("2 faces")')
    # never clustered: the page asks, hears 404 and says so (Chromium logs every 404 it hears); nothing else failed
    assert all("/v1/galleries/faces/clusters?" in url for url in missing) and len(missing) == 1, missing
    assert [m for m in problems if "404" not in m] == []


def test_the_page_shows_the_galleries_the_key_reaches_and_only_theirs(tmp_path, tiny_model_dir):
    from jobs.api.keys import new_key

    every, every_entry = new_key("root", ["read", "write", "admin"])
    shop, shop_entry = new_key("shop", ["read", "write"], ["shop"])
    settings = Settings(model=tiny_model_dir, api_keys=f"{every_entry},{shop_entry}",
                        milvus_uri=str(tmp_path / "two.db"), gallery="faces", archive_uri=str(tmp_path / "archive"))
    with live_app(create_app(settings)) as site, httpx.Client(base_url=site, headers={"X-API-Key": every}) as api:
        assert api.post("/v1/galleries", json={"name": "shop"}).status_code == 201
        for path, name, person in (("/v1", "ann", 1), ("/v1/galleries/shop", "bob", 2)):
            assert api.post(f"{path}/identities/{name}/faces", files=[("images", ("p.png", png(person)))]
                            ).status_code == 201
        problems: list[str] = []
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{site}/review")
            page.fill("#key", every)
            page.click("#key-form button")
            page.wait_for_selector('.identity[data-identity="ann"]')  # the default gallery first
            assert page.locator("#gallery-choice").is_visible()
            assert page.locator("#gallery option").all_inner_texts() == ["faces (1 faces)", "shop (1 faces)"]
            page.select_option("#gallery", "shop")
            page.wait_for_selector('.identity[data-identity="bob"]')
            assert page.locator('.identity[data-identity="ann"]').count() == 0

            page.evaluate("sessionStorage.clear()")
            page.goto(f"{site}/review")
            page.fill("#key", shop)
            page.click("#key-form button")
            page.wait_for_selector('.identity[data-identity="bob"]')  # its one gallery, without a choice to make
            assert not page.locator("#gallery-choice").is_visible()
            assert page.locator("#gallery option").all_inner_texts() == ["shop (1 faces)"]
            assert page.locator('.identity[data-identity="ann"]').count() == 0
            browser.close()
        assert problems == []


def test_faces_the_calibration_left_out_are_named_or_confirmed_in_the_browser(tmp_path, tiny_model_dir):
    from tests.jobs.api.test_gallery_health import set_aside_gallery

    uri, archive_root = str(tmp_path / "aside.db"), str(tmp_path / "archive")
    settings = Settings(model=tiny_model_dir, api_keys=ENTRY, milvus_uri=uri, gallery="faces",
                        archive_uri=archive_root)
    with live_app(create_app(settings)) as site:
        with httpx.Client(base_url=site, headers={"X-API-Key": KEY}, timeout=60) as api:
            assert api.post("/v1/identities/owner/faces", files=[("images", ("o.png", png(99), "image/png"))]
                            ).status_code == 201
            staff = set_aside_gallery(uri, "faces")
            client = connect(uri)
            index = FaceIndex(client, Galleries(client, "faces").serving())
            near = index.rows([f for f, name in index.labelled_faces() if name == "person 2"])
            missed = FaceRow("search:00000000000000aa#0", UNLABELLED, next(iter(near.values())).vector,
                             9_000_001, {"expires_at": 2_000_000_000, "below": 0.99})  # kept: a miss, not judged
            index.upsert([missed])
            index.flush()
            shown = [int(s["face_id"]) for s in staff.values()] + [missed.face_id] + [
                f for f, name in index.labelled_faces() if name in ("person 0", "person 1")]
            FaceArchive(archive_root, "faces").write([  # the pictures a person looks at
                ArchivedFace(r.face_id, r.identity, r.source, "{}", "photo", encode(picture(png(n % 40, n))))
                for n, r in enumerate(index.rows(shown).values())])
            client.close()
            assert api.post("/v1/calibration", json={"fpir": 0.05, "method": "tail"}).status_code == 200
        first, second = staff["event/0.jpg"], staff["event/1.jpg"]
        problems: list[str] = []
        with chromium(problems, 1400) as page:
            signed_in(page, site)
            page.click("#health-check")
            card = f'.finding.set-aside[data-face="{first["face_id"]}"]'
            page.wait_for_selector(card)
            assert "looks like person 0" in page.locator(card).inner_text()
            playwright.expect(page.locator(f'{card} img[src^="blob:"]')).to_have_count(3)  # it, and person 0's two
            page.screenshot(path=str(tmp_path / "set-aside.png"), full_page=True)

            page.locator(f'{card} button[data-name="person 0"]').click()  # "It is person 0"
            playwright.expect(page.locator(card)).to_have_count(0)
            assert "is now person 0's" in page.locator("#status").inner_text()
            page.wait_for_selector('.identity[data-identity="person 0"] h3:has-text("3 faces")')

            other = f'.finding.set-aside[data-face="{second["face_id"]}"]'
            asked: list[str] = []  # where searches would answer it as someone, the page asks first
            page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
            page.locator(f"{other} button[data-stranger]").click()  # "Nobody enrolled"
            playwright.expect(page.locator(other)).to_have_count(0)
            assert "counts as a stranger" in page.locator("#status").inner_text()

            kept = f'.finding.kept-nearest[data-face="{missed.face_id}"]'  # the person a threshold missed
            assert "kept from a search, not judged yet: looks like person 2" in page.locator(kept).inner_text()
            page.locator(f'{kept} button[data-name="person 2"]').click()
            playwright.expect(page.locator(kept)).to_have_count(0)
            page.wait_for_selector('.identity[data-identity="person 2"] h3:has-text("3 faces")')
    assert asked and "match someone enrolled" in asked[0]  # the staff photo scores above the threshold: it asked
    # never clustered: the page hears 404 for its clusters; and the 409 it asked on
    assert [m for m in problems if "404" not in m and "409" not in m] == []
