"""The dashboard's main panels from a real run, drawn as a PNG for the docs: the API on Milvus Lite with the shared
MobileFaceNet, a gallery of LFW-gray people enrolled over HTTP and calibrated for FPIR 1% (`POST /v1/calibration`),
a real Prometheus (Debian's) scraping it every 2 s, and search traffic whose second half comes from a "new
camera" (the photos darkened and blurred), which the unknown share and the median best score show within a minute.

    .venv/bin/python bench/dashboard_render.py [--people 150] [--minutes 4] [--out docs/img/dashboard.png]

The panels run the queries of deploy/grafana/arcmatch.json with Grafana's variables filled in ($__rate_interval:
30s; $gallery: the run's gallery) and the drift panels' windows shortened from an hour to a minute (a 4-minute run
has no day before). Needs `prometheus` on PATH (.ci/run installs it) and ../shared.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import SHARED, onnx_model_dir  # noqa: E402

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "arcmatch.json"
PANELS = ["Requests by status", "Search latency p50 / p99", "Phase latency p50 / p99", "Decisions by kind",
          "Unknown share (1 h) and the day before", "Median best score (1 h) and the day before"]


def jpeg(path: Path, camera_changed: bool) -> bytes:
    image = Image.open(path).convert("RGB")
    if camera_changed:  # a darker, softer camera
        image = ImageEnhance.Brightness(image.filter(ImageFilter.GaussianBlur(2.5))).enhance(0.45)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def queries(gallery: str) -> dict[str, list[str]]:
    board = json.loads(DASHBOARD.read_text())
    panels = {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in board["panels"]}
    filled = {}
    for title in PANELS:
        filled[title] = [e.replace("$__rate_interval", "30s").replace("$gallery", gallery).replace("[1h]", "[1m]")
                         .replace("[1d] offset 1h", "[1m] offset 1m") for e in panels[title]]
    return filled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=150)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = parser.parse_args()
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not on PATH (Debian: apt-get install prometheus)")
    import httpx
    import yaml

    from jobs.api.app import create_app
    from jobs.api.keys import new_key
    from jobs.api.local import serve_in_thread
    from jobs.settings import Settings

    work = Path(tempfile.mkdtemp())
    lfw = SHARED / "data" / "lfw_gray"
    people = sorted(p for p in lfw.iterdir() if len(list(p.glob("*.jpg"))) >= 3)
    rng = np.random.default_rng(0)
    chosen = [people[i] for i in rng.permutation(len(people))[: 2 * args.people]]
    enrolled, strangers = chosen[: args.people], chosen[args.people :]
    key, entry = new_key("bench", ["read", "write"])
    gallery = "dashboard"
    settings = Settings(model=onnx_model_dir(work, "mobilefacenet.spec.json"), api_keys=entry,
                        milvus_uri=str(work / "g.db"), gallery=gallery, archive=False,
                        audit_dir=str(work / "audit"), enroll_conflict_check=False)
    with serve_in_thread(create_app(settings), start_timeout_s=120) as base, \
            httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as api:
        for person in enrolled:
            photo = sorted(person.glob("*.jpg"))[0]
            answer = api.post(f"/v1/identities/{person.name}/faces",
                              files=[("images", (photo.name, jpeg(photo, False), "image/jpeg"))])
            assert answer.status_code == 201, answer.text
        calibrated = api.post("/v1/calibration", json={"fpir": 0.01})  # the gallery's own threshold, as a user would
        assert calibrated.status_code == 200, calibrated.text
        (work / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "2s"},
            "scrape_configs": [{"job_name": "arcmatch", "static_configs": [
                {"targets": [base.removeprefix("http://")]}]}]}))
        port = 9090 + int(rng.integers(1000, 5000))
        prom = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            began = time.time()
            probes = [(p, sorted(p.glob("*.jpg"))[1]) for p in enrolled] + \
                     [(p, sorted(p.glob("*.jpg"))[0]) for p in strangers]
            end = began + 60 * args.minutes
            n = 0
            while time.time() < end:
                _, photo = probes[int(rng.integers(len(probes)))]
                changed = time.time() > began + 30 * args.minutes  # the second half: the new camera
                api.post("/v1/search", files={"image": (photo.name, jpeg(photo, changed), "image/jpeg")},
                         data={"faces": "largest"})
                n += 1
            time.sleep(4)  # the last scrapes
            series = {}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as p:
                for title, exprs in queries(gallery).items():
                    series[title] = []
                    for which, expr in enumerate(exprs):
                        found = p.get("/api/v1/query_range", params={"query": expr, "start": began, "end": end,
                                                                      "step": 5}).json()["data"]["result"]
                        series[title] += [(which, r["metric"], np.array(r["values"], float)) for r in found]
        finally:
            prom.terminate()
            prom.wait(timeout=30)
    draw(series, began, n, args)


def draw(series: dict, began: float, searches: int, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 2, figsize=(11, 9), dpi=110)
    names = {"Search latency p50 / p99": ("p50", "p99"), "Phase latency p50 / p99": ("p50", "p99"),
             "Unknown share (1 h) and the day before": ("last minute", "the minute before"),
             "Median best score (1 h) and the day before": ("last minute", "the minute before")}
    for axis, title in zip(axes.ravel(), PANELS, strict=True):
        for which, labels, values in series[title]:
            kept = [v for k, v in labels.items() if k not in ("__name__", "job", "instance")]
            name = " ".join(kept + ([names[title][which]] if title in names else []))
            axis.plot((values[:, 0] - began) / 60, values[:, 1], label=name or title)
        axis.axvline(args.minutes / 2, color="grey", ls=":", lw=1)
        axis.set_title(title.replace("(1 h) and the day before", "(1 min) and the minute before"), fontsize=10)
        axis.set_xlabel("minutes")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"arcmatch dashboard, a real run: {searches} searches, a new camera from the dotted line",
                    fontsize=11)
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"{searches} searches; panels drawn in {args.out}")


if __name__ == "__main__":
    main()
