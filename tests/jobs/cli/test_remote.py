"""`arcmatch enroll`, `arcmatch identities` and `arcmatch search --api URL`: the commands that go through a running
service with the Python client, against a live one; and `identities` without --api, on the gallery itself."""

import json

from jobs.api.app import create_app
from jobs.api.keys import new_key
from jobs.cli import main
from jobs.service import IdentityService
from jobs.settings import Settings
from tests.helpers import live_app, png

KEY, ENTRY = new_key("cli", ["read", "write", "admin"])


def test_enroll_identities_and_search_through_a_running_service(tmp_path, monkeypatch, capsys, tiny_model_dir):
    settings = Settings(model=tiny_model_dir, milvus_uri=str(tmp_path / "served.db"), gallery="front",
                        api_keys=ENTRY, archive_uri=str(tmp_path / "archive"))
    for person, name in ((1, "ann"), (2, "bob")):
        (tmp_path / "people" / name).mkdir(parents=True)
        for n in range(2):
            (tmp_path / "people" / name / f"{n}.png").write_bytes(png(person, n))
    (tmp_path / "people" / "bob" / "notes.txt").write_text("not a photo")  # left alone, as ingest does
    (tmp_path / "people" / "bob" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (tmp_path / "door.png").write_bytes(png(1, 5))
    monkeypatch.chdir(tmp_path)
    with live_app(create_app(settings)) as base:
        monkeypatch.delenv("ARCMATCH_API_KEY", raising=False)
        assert main(["enroll", "people", "--api", base]) == 2
        assert "set ARCMATCH_API_KEY" in capsys.readouterr().err
        monkeypatch.setenv("ARCMATCH_API_KEY", "am_not_a_key")  # one line, and the batch's tally: not 4 refusals
        assert main(["enroll", "people", "--api", base]) == 2
        assert "unknown API key (header X-API-Key) (the batch stopped: 0 photos enrolled" in capsys.readouterr().err
        monkeypatch.setenv("ARCMATCH_API_KEY", KEY)

        assert main(["enroll", "people", "--api", base]) == 3  # finished, one file refused
        out = capsys.readouterr().out
        assert "enrolled 4 photos (4 faces); 1 refused" in out and "enroll_errors.csv" in out
        refused = (tmp_path / "enroll_errors.csv").read_text()
        assert "broken.png" in refused and "notes.txt" not in refused

        assert main(["identities", "--api", base]) == 0
        assert capsys.readouterr().out.splitlines() == ["ann\t2", "bob\t2", "2 identities, 4 faces"]
        assert main(["search", "door.png", "--api", base]) == 0
        line = capsys.readouterr().out
        assert line.startswith("door.png\tann\tscore ") and line.rstrip().endswith(", the model's calibration)")
        assert main(["search", "door.png", "--api", base, "--json"]) == 0
        remote = json.loads(capsys.readouterr().out)
        assert set(remote) == {"image", "face_number", "match", "identity", "score", "threshold", "candidates", "face",
                                "threshold_source"}
        assert (remote["image"], remote["face_number"], remote["match"], remote["identity"]) == ("door.png", 1, True,
                                                                                                  "ann")
        assert main(["identities", "--api", base, "--gallery", "elsewhere"]) == 4  # no such gallery
        assert "gallery 'elsewhere' not found" in capsys.readouterr().err


def test_identities_without_a_service_reads_the_gallery_itself(tmp_path, monkeypatch, capsys, tiny_model_dir):
    monkeypatch.setenv("ARCMATCH_MILVUS_URI", str(tmp_path / "local.db"))
    monkeypatch.setenv("ARCMATCH_MODEL", str(tiny_model_dir))
    monkeypatch.delenv("ARCMATCH_API_URL", raising=False)
    service = IdentityService.open(Settings(gallery="desk"), create=True)
    service.enroll("cat", [("c.png", png(3))])
    service.close()
    assert main(["identities", "--gallery", "desk", "--json"]) == 0
    assert capsys.readouterr().out.strip() == '{"identity": "cat", "faces": 1}'
    # the same answer as through the service, key for key
    monkeypatch.setenv("ARCMATCH_GALLERY", "desk")
    (tmp_path / "cat.png").write_bytes(png(3, 1))
    assert main(["search", str(tmp_path / "cat.png"), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert set(local) == {"image", "face_number", "match", "identity", "score", "threshold", "candidates", "face",
                                "threshold_source"}
    assert (local["face_number"], local["identity"], local["candidates"][0]["identity"]) == (1, "cat", "cat")
    assert local["threshold_source"] == "model"
    assert main(["search", str(tmp_path / "cat.png"), "--threshold", "0.99"]) == 0  # the caller's, said so
    assert capsys.readouterr().out.rstrip().endswith("(threshold 0.9900, yours)")
