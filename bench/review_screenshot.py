"""The review page on real faces, for docs/img/review.png: LFW-gray with the shared MobileFaceNet, through the API.

    .venv/bin/python bench/review_screenshot.py [--out docs/img/review.png]
    .venv/bin/python bench/review_screenshot.py --health docs/img/health.png

Six people are enrolled through the API (their first photo). The API keeps the faces it answers "unknown" for
(ARCMATCH_KEEP_UNKNOWN_FACES), and is searched with four photos each of five other people; `arcmatch cluster`
groups those kept faces. Then Chromium (Debian's, through Playwright) opens /review, searches with another photo of
an enrolled person, and the page is photographed.

`--health`: the "Gallery health" section instead, on 30 people enrolled with three photos each, where one more
photo of the first is enrolled under a second name (one person, two names), the second's is filed under the third
(a moved photo) and a photo of someone enrolled nowhere under the fourth (a stranger's photo).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import CACHE, SHARED, embed_cached, lfw_pair_threshold, onnx_model_dir  # noqa: E402
from embedder.layout import Calibration  # noqa: E402
from jobs.api.app import create_app  # noqa: E402
from jobs.api.keys import new_key  # noqa: E402
from jobs.api.local import serve_in_thread  # noqa: E402
from jobs.pipelines.cluster import cluster  # noqa: E402
from jobs.settings import Settings  # noqa: E402

LFW = SHARED / "data" / "lfw_gray"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/img/review.png"))
    parser.add_argument("--health", type=Path, metavar="OUT", help="photograph the health section instead, to OUT")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="arcmatch-review-"))
    model = onnx_model_dir(workdir, "mobilefacenet.spec.json")
    vectors = embed_cached(model, sorted(LFW.glob("*/*.jpg")), CACHE / "lfw_gray_mobilefacenet.npz")
    threshold = lfw_pair_threshold(vectors)["threshold"]
    Calibration(threshold=threshold, target_far=1e-3, measured_far=1e-3, tar=0.93, pairs=6000).save(model)
    key, entry = new_key("reviewer", ["read", "write"])
    settings = Settings(model=model, api_keys=entry, milvus_uri=str(workdir / "review.db"), gallery="faces",
                        archive_uri=str(workdir / "archive"), keep_unknown_faces=True)
    people = sorted((p for p in LFW.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 6), key=lambda p: p.name)
    if args.health is not None:
        return health_section(settings, key, people, args.health)
    enrolled, strangers = people[:40:7][:6], people[3:60:11][:5]
    with serve_in_thread(create_app(settings), start_timeout_s=60) as base:
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as api:
            for person in enrolled:
                photo = sorted(person.glob("*.jpg"))[0]
                api.post(f"/v1/identities/{person.name}/faces", files=[("images", (photo.name, photo.read_bytes()))],
                         data={"proceed": "true"}).raise_for_status()
            for person in strangers:
                for photo in sorted(person.glob("*.jpg"))[:4]:
                    api.post("/v1/search", files={"image": (photo.name, photo.read_bytes())}).raise_for_status()
        cluster(milvus=settings.milvus_uri, root=settings.archive_root(), gallery="faces", k=10, threshold=0.5)
        probe = sorted(enrolled[2].glob("*.jpg"))[3]
        with signed_in(base, key, 1000) as page:
            page.wait_for_selector(".cluster")
            page.set_input_files("#probe", str(probe))
            page.click("#search-form button")
            page.wait_for_selector("#search-result li")
            page.wait_for_timeout(1500)  # the thumbnails
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            print(page.locator("#search-result").inner_text(), "->", probe.parent.name)
    print(f"wrote {args.out}")


@contextmanager
def signed_in(base: str, key: str, height: int):
    """The review page in Debian's Chromium (through Playwright), the key given."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": height})
            page.goto(f"{base}/review")
            page.fill("#key", key)
            page.click("#key-form button")
            yield page
        finally:
            browser.close()


def health_section(settings: Settings, key: str, people: list[Path], out: Path) -> None:
    """The health section's findings on real faces (see the module's docstring), photographed."""
    enrolled, nobody = people[:30], people[40]
    photos = {person.name: sorted(person.glob("*.jpg")) for person in enrolled}
    planted = {  # name -> the photos enrolled under it
        **{name: files[:3] for name, files in photos.items()},
        f"{enrolled[0].name} (2)": [photos[enrolled[0].name][3]],
    }
    planted[enrolled[2].name] = [*planted[enrolled[2].name], photos[enrolled[1].name][4]]
    planted[enrolled[3].name] = [*planted[enrolled[3].name], sorted(nobody.glob("*.jpg"))[0]]
    with serve_in_thread(create_app(settings), start_timeout_s=60) as base:
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as api:
            for name, files in planted.items():
                api.post(f"/v1/identities/{name}/faces", data={"proceed": "true"},
                         files=[("images", (f.name, f.read_bytes())) for f in files]).raise_for_status()
            print(api.get("/v1/gallery/check").json())
        with signed_in(base, key, 900) as page:
            page.click("#health-check")
            page.wait_for_selector(".finding.stray")
            page.wait_for_timeout(2000)  # the thumbnails
            out.parent.mkdir(parents=True, exist_ok=True)
            page.locator("#health").screenshot(path=str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
