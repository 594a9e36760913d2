"""`arcmatch search` on raw photos (YuNet + the shared MobileFaceNet, LFW-gray faces): a line per face of a group
photo, and a photo without a face is exit 2 naming the file. Skipped when ../shared is absent."""

import os
import subprocess
import sys

import pytest

from tests.conftest import YUNET_DEFAULT
from tests.helpers import encode, group_photo, no_face, run_cli

PEOPLE = ("George_W_Bush", "Colin_Powell", "Tony_Blair")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, mobilefacenet_aligned, shared_models, lfw_image):
    """Three people enrolled (photo 1 each) in a Milvus Lite file by a process of its own: Milvus Lite holds its
    file until the process that opened it ends. Returns (folder, environment)."""
    folder = tmp_path_factory.mktemp("search-faces")
    env = {**os.environ, "ARCMATCH_MODEL": str(mobilefacenet_aligned), "ARCMATCH_MILVUS_URI": str(folder / "g.db"),
           "ARCMATCH_DETECTOR": str(shared_models / "yunet" / YUNET_DEFAULT)}
    for name in PEOPLE:
        (folder / f"{name}.jpg").write_bytes(encode(lfw_image(name, 1), "JPEG"))
    (folder / "group.png").write_bytes(encode(group_photo([lfw_image(name, 2) for name in PEOPLE])))
    (folder / "empty.png").write_bytes(encode(no_face()))
    enroll = ("from pathlib import Path\nfrom jobs.service import IdentityService\nfrom jobs.settings import Settings\n"
              "service = IdentityService.open(Settings(), create=True)\n"
              f"for name in {PEOPLE!r}:\n"
              "    service.enroll(name, [(name, Path(name + '.jpg').read_bytes())])\n")
    subprocess.run([sys.executable, "-c", enroll], check=True, env=env, cwd=folder, timeout=120)
    return folder, env


def test_a_group_photo_prints_a_line_per_face(gallery):
    folder, env = gallery
    result = run_cli("search", "group.png", env=env, cwd=folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("group.png\tface ") for line in lines)
    by_position = sorted(lines, key=lambda line: int(line.split(" at [")[1].split(",")[0]))  # box x1, left first
    assert [line.split("\t")[2] for line in by_position] == list(PEOPLE)


def test_a_photo_without_a_face_or_unreadable_is_named_and_skipped(gallery):
    folder, env = gallery
    (folder / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    result = run_cli("search", "empty.png", "cut.jpg", "group.png", env=env, cwd=folder)
    assert result.returncode == 3  # finished, some photos skipped (each said)
    assert "empty.png" in result.stderr and "no face" in result.stderr and "Traceback" not in result.stderr
    assert "cut.jpg: corrupt image data" in result.stderr
    assert len(result.stdout.splitlines()) == 3  # the photo after them is still answered
    alone = run_cli("search", "empty.png", env=env, cwd=folder)
    assert alone.returncode == 2 and "empty.png" in alone.stderr and "no face" in alone.stderr  # nothing answered
