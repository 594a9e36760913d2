"""Helpers that several test modules share: images (synthetic faces, and photos built from LFW-gray), free ports, a
live API on loopback, the CLI as a process, a model directory for the shared MobileFaceNet."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from jobs.api.keys import new_key
from trainer.synthetic import make_identity, render

# the API tests' two keys (the names show in audit records): a reader, and an admin who may also write
READ_KEY, READ_ENTRY = new_key("reader", ["read"])
WRITE_KEY, WRITE_ENTRY = new_key("admin", ["read", "write"])
R, W = {"X-API-Key": READ_KEY}, {"X-API-Key": WRITE_KEY}


# how far the photos of one synthetic person stray from one another (trainer/synthetic.py): those of a cooperative
# subject, which the suite's tiny model tells apart (tests/fixtures/train_tiny_model.py)
TEST_VARIATION = 0.2
TINY_DIM, TINY_THRESHOLD = 64, 0.55  # that model's embedding size and calibrated threshold (tests/conftest.py)


def png(identity: int, n: int = 0, size: int = 32) -> bytes:
    """A synthetic face of `identity` (its n-th photo) as PNG bytes."""
    rng = np.random.default_rng([identity, n])
    buf = io.BytesIO()
    Image.fromarray(render(make_identity(0, identity), rng, size, variation=TEST_VARIATION)).save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_port() -> int:
    """A free port for a server that binds it later, outside the kernel's ephemeral range (32768 and up, where any
    process's outgoing connection may take it meanwhile) and Ray's worker ports (10002-19999)."""
    import random

    while True:
        port = random.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def live_app(app):
    """The ASGI app on a free loopback port in a thread of this process (jobs/api/local.py); yields its URL."""
    from jobs.api.local import serve_in_thread

    return serve_in_thread(app, start_timeout_s=60)


def wait_until_healthy(base: str, server: subprocess.Popen, said=None, timeout_s: float = 240) -> None:
    """Returns once `arcmatch serve` at `base` answers /v1/health; fails with the end of what it said (`said()`,
    by default its stderr pipe) if it exits first or never answers."""
    import time

    import httpx

    def output() -> str:
        return said() if said is not None else server.communicate()[1] or ""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the service exited ({server.returncode}): {output()[-3000:]}")
        try:
            if httpx.get(f"{base}/v1/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no answer from {base} in {timeout_s} s: {said()[-3000:] if said else ''}")


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`arcmatch ARGS` as a separate process, as a user runs it (stdout and stderr are pipes, not a terminal)."""
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env if env is not None else dict(os.environ), **kwargs)


def cli_here(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `arcmatch ARGS` through its entry point in this process, on the test's Ray:
    a process of its own costs seconds of imports and starts Ray's workers again (tens of core-seconds a test in
    the suite). Settings come from this process's environment (monkeypatch it)."""
    from jobs.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ---- photos built from LFW-gray (250x250, the face centred), for the detection and alignment paths ----

ROOT = Path(__file__).resolve().parents[1]


def read_lfw(data: Path, name: str, number: int = 1) -> np.ndarray:
    """The (250, 250, 3) uint8 RGB array of LFW-gray's <name>_<number>.jpg under `data` (../shared/data)."""
    return np.asarray(Image.open(data / "lfw_gray" / name / f"{name}_{number:04d}.jpg").convert("RGB"))


def lfw_tree(root: Path, data: Path, people, numbers=(1, 2), *, faceless: str | None = None,
             faceless_size: tuple[int, int] = (300, 400)) -> Path:
    """An image tree `root/<person>/<n>.jpg` of LFW-gray photos under `data` (linked, never copied), and with
    `faceless`, a folder of that name holding one photo without a face."""
    for name in people:
        (root / name).mkdir(parents=True)
        for n in numbers:
            (root / name / f"{n}.jpg").symlink_to(data / "lfw_gray" / name / f"{name}_{n:04d}.jpg")
    if faceless:
        (root / faceless).mkdir(parents=True)
        (root / faceless / "wall.png").write_bytes(encode(no_face(*faceless_size)))
    return root


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


def paste(canvas_size: tuple[int, int], photos: list[np.ndarray], at: list[tuple[int, int]],
          scale: float = 1.0, fill: int = 128) -> np.ndarray:
    """A grey (height, width) canvas with each photo scaled by `scale` and pasted with its top-left at (x, y)."""
    canvas = np.full((*canvas_size, 3), fill, np.uint8)
    for photo, (x, y) in zip(photos, at, strict=True):
        size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
        scaled = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BICUBIC))
        canvas[y : y + size[1], x : x + size[0]] = scaled
    return canvas


def group_photo(photos: list[np.ndarray]) -> np.ndarray:
    """Three LFW photos scaled 1.2x (300 px) side by side on a 940x400 grey canvas, faces at x 10, 320, 630."""
    return paste((400, 940), photos, [(10 + 310 * i, 50) for i in range(len(photos))], scale=1.2)


def no_face(height: int = 300, width: int = 400) -> np.ndarray:
    """A horizontal gradient with noise: nothing a detector should call a face."""
    rng = np.random.default_rng(7)
    ramp = np.linspace(40, 220, width)[None, :, None] + rng.normal(0, 12, (height, width, 3))
    return np.clip(ramp, 0, 255).astype(np.uint8)


def sideways(photo: np.ndarray) -> np.ndarray:
    """The photo turned 90 degrees counter-clockwise, as a scanner without EXIF would deliver it."""
    return np.ascontiguousarray(np.rot90(photo))


def blurred(photo: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(radius)))


def aligned_model_dir(directory: Path, models: Path, threshold: float, spec: str = "mobilefacenet_aligned") -> Path:
    """An ONNX model directory for MobileFaceNet on five-point aligned faces (or, with spec "mobilefacenet", behind
    its fixed crop box): model.onnx linked to the shared file, spec.json from bench/specs, and a calibration.json
    holding `threshold` (a cosine similarity)."""
    from embedder.layout import Calibration

    (directory / "model.onnx").symlink_to(models / "mobilefacenet" / "MobileFaceNet.onnx")
    (directory / "spec.json").write_text((ROOT / "bench" / "specs" / f"{spec}.spec.json").read_text())
    Calibration(threshold=threshold, target_far=1e-2, measured_far=1e-2, tar=0.95, pairs=600).save(directory)
    return directory


def pin_port(server) -> None:
    """Make a started `milvus.MilvusServer` come back on its port when it is started again.

    The package's `listen_port` only sets where its search for a free port starts, and its probe binds without
    SO_REUSEADDR, so for a minute of TIME_WAIT after a stop it would move the server to the next port (the server
    itself reuses the address); pinned, with a probe that reuses it too, a restart lands where clients look."""

    def bind_reusing(port: int):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            return sock
        except OSError:
            sock.close()
            return None

    server.config.configs["proxy_port"] = server.listen_port
    server.config.try_bind_port = bind_reusing


def people(n_people: int, per_person: int, spread: float, seed: int = 0, first: int = 0, dim: int = 16) -> list:
    """Identity-clustered unit vectors as FaceRows named "person N": a random centre per person, its faces
    scattered around it (spread 0.05: near copies; 1.0: a crowded domain where strangers come close)."""
    from indexer.ids import face_id
    from indexer.store import FaceRow

    rng = np.random.default_rng(seed)
    rows = []
    for p in range(first, first + n_people):
        centre = rng.normal(size=dim)
        for f in range(per_person):
            v = centre / np.linalg.norm(centre) + spread * rng.normal(size=dim) / np.sqrt(dim)
            source = f"p{p}/f{f}"
            rows.append(FaceRow(source, f"person {p}", (v / np.linalg.norm(v)).astype(np.float32), face_id(source)))
    return rows


def untrained_model(directory: Path, spec, seed: int, threshold: float) -> Path:
    """A model directory with untrained weights of `spec` (seeded) and a calibration at `threshold`: a model whose
    spec matters to a test, not what it recognises."""
    import torch

    from embedder.checkpoint import Calibration, save_embedder
    from embedder.model import FaceEmbedder

    torch.manual_seed(seed)
    save_embedder(FaceEmbedder(spec), directory)
    Calibration(threshold=threshold, target_far=1e-3, measured_far=1e-3, tar=0.9, pairs=100).save(directory)
    return directory


def photo_tree(root: Path, people: int, photos: int, first: int = 5000) -> int:
    """A tree of `people` folders of `photos` synthetic photos each (32x32, a cooperative subject's variation),
    people numbered from `first`; returns the number of photos."""
    for person in range(people):
        folder = root / f"person {person:04d}"
        folder.mkdir(parents=True)
        identity = make_identity(0, first + person)
        for n in range(photos):
            Image.fromarray(render(identity, np.random.default_rng([person, n]), 32, variation=0.2)).save(
                folder / f"{n}.png")
    return people * photos


def gallery_rows(uri: str | Path, gallery: str) -> tuple[int, int, float | None]:
    """(rows, distinct face ids, the collection's threshold) of the collection a gallery serves from: a face id
    derives from the photo, so a doubled face shows as more rows than ids, or more ids than photos."""
    from indexer.galleries import Galleries
    from indexer.store import FaceIndex, connect

    client = connect(str(uri))
    try:
        serving = Galleries(client, gallery).serving()
        if serving is None:
            return 0, 0, None
        index = FaceIndex(client, serving)
        ids = [face for face, _ in index.labelled_faces()]
        return len(ids), len(set(ids)), index.info().threshold
    finally:
        client.close()


def metric_samples(text: str) -> dict[tuple, float]:
    """{(metric sample name, sorted labels): value} from Prometheus's text format."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scraped(client, base: str | None = None) -> dict[tuple, float]:
    """A scrape of /metrics (of `base`, or of the client's own base URL), as metric_samples."""
    answer = client.get(f"{base}/metrics" if base else "/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return metric_samples(answer.text)


def metric_value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def counts_per_process(directory: Path, name: str, **labels) -> dict[str, float]:
    """{pid: that process's count of one counter sample}, read from its file in a prometheus-client multiprocess
    directory (PROMETHEUS_MULTIPROC_DIR)."""
    import json

    from prometheus_client.mmap_dict import MmapedDict

    found: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        for key, number, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, sample_labels, _ = json.loads(key)
            same = sample.removesuffix("_total") == name.removesuffix("_total")
            if same and all(sample_labels.get(k) == v for k, v in labels.items()):
                pid = path.stem.split("_", 1)[1]
                found[pid] = found.get(pid, 0.0) + number
    return found
