"""One configuration: ARCMATCH_* variables configure every command and the API alike, and flags override them."""

import json
import os
import subprocess
import sys

import pytest

from common.errors import BadInput
from jobs.cli import build_parser
from jobs.cli.options import settings_from
from jobs.settings import Settings
from tests.helpers import png, run_cli

COMMANDS = {"search": ["search", "probe.png"], "ingest": ["ingest", "gallery/"], "serve": ["serve"],
            "eval": ["eval", "--data", "held/"]}


@pytest.fixture
def environment(monkeypatch, tmp_path):
    values = {"ARCMATCH_MODEL": str(tmp_path / "model"), "ARCMATCH_MILVUS_URI": str(tmp_path / "env.db"),
              "ARCMATCH_GALLERY": "from_env", "ARCMATCH_SEARCH_K": "7", "ARCMATCH_SEARCH_EF": "99"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    return values


@pytest.mark.parametrize("command", COMMANDS, ids=list(COMMANDS))
def test_every_command_reads_the_same_variables(environment, command):
    settings = settings_from(build_parser().parse_args(COMMANDS[command]))
    assert str(settings.model) == environment["ARCMATCH_MODEL"]
    assert settings.milvus_uri == environment["ARCMATCH_MILVUS_URI"]
    assert settings.gallery == "from_env" and settings.search_k == 7 and settings.search_ef == 99


@pytest.mark.parametrize("command", ["search", "ingest", "serve"])
def test_flags_override_the_environment(environment, command, tmp_path):
    args = build_parser().parse_args([*COMMANDS[command], "--model", "flag-model", "--milvus", "flag.db",
                                      "--gallery", "flag_g"])
    settings = settings_from(args)
    assert (str(settings.model), settings.milvus_uri, settings.gallery) == ("flag-model", "flag.db", "flag_g")
    assert settings.search_k == 7  # what no flag gave still comes from the environment


@pytest.mark.parametrize("command", ["search", "ingest", "serve"])
def test_the_gallery_flag_keeps_its_old_name(environment, command):
    args = build_parser().parse_args([*COMMANDS[command], "--collection", "old_flag"])
    assert settings_from(args).gallery == "old_flag"


def test_the_gallery_setting_keeps_its_old_name(monkeypatch, tmp_path):
    """`gallery` was called `collection`: ARCMATCH_COLLECTION and Settings(collection=...) still name it, and
    the new name wins where both are given."""
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for name in ("ARCMATCH_GALLERY", "ARCMATCH_COLLECTION"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().gallery == "faces"
    assert Settings(gallery="x").gallery == "x" and Settings(collection="x").gallery == "x"
    assert Settings.load(collection="x", gallery=None).gallery == "x"  # a flag not given does not hide it
    monkeypatch.setenv("ARCMATCH_COLLECTION", "old_env")
    assert Settings().gallery == "old_env"
    monkeypatch.setenv("ARCMATCH_GALLERY", "new_env")
    assert Settings().gallery == "new_env"  # both set: the new name wins
    assert Settings(collection="kw").gallery == "kw"  # a keyword beats the environment, by either name
    assert Settings(gallery="kw", collection="old_kw").gallery == "kw"
    assert "collection" not in Settings().model_dump()
    monkeypatch.delenv("ARCMATCH_GALLERY")
    monkeypatch.delenv("ARCMATCH_COLLECTION")
    (tmp_path / ".env").write_text("ARCMATCH_COLLECTION=dotenv\n")
    assert Settings().gallery == "dotenv"  # a .env file too


def test_search_flags_override_k_and_ef(environment):
    settings = settings_from(build_parser().parse_args(["search", "p.png", "--k", "3", "--ef", "64"]))
    assert (settings.search_k, settings.search_ef) == (3, 64)


def test_the_api_and_the_cli_share_defaults(monkeypatch, tmp_path):
    for name in ("ARCMATCH_SEARCH_K", "ARCMATCH_SEARCH_EF", "ARCMATCH_MILVUS_URI", "ARCMATCH_GALLERY",
                 "ARCMATCH_COLLECTION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    cli = settings_from(build_parser().parse_args(["search", "p.png"]))
    assert cli.model_dump() == Settings().model_dump()


def test_search_runs_from_the_environment_alone(tmp_path, tiny_model_dir):
    """`arcmatch search` with no flags: model, store, gallery and k all come from ARCMATCH_*."""
    env = {**os.environ, "ARCMATCH_MODEL": str(tiny_model_dir), "ARCMATCH_MILVUS_URI": str(tmp_path / "g.db"),
           "ARCMATCH_GALLERY": "people", "ARCMATCH_SEARCH_K": "1"}
    for n, name in enumerate(("ann", "bob")):
        (tmp_path / f"{name}.png").write_bytes(png(n + 1))
    # enrolled in a process of its own: Milvus Lite holds its file until the process that opened it ends
    enroll = ("from pathlib import Path\nfrom jobs.service import IdentityService\nfrom jobs.settings import Settings\n"
              "service = IdentityService.open(Settings(), create=True)\n"
              "for name in ('ann', 'bob'):\n"
              f"    service.enroll(name, [(name, Path({str(tmp_path)!r}, name + '.png').read_bytes())])\n")
    subprocess.run([sys.executable, "-c", enroll], check=True, env=env, cwd=tmp_path, timeout=120)
    result = run_cli("search", str(tmp_path / "ann.png"), "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["identity"] == "ann" and len(answer["candidates"]) == 1  # k = 1 face: one candidate


def test_the_face_archive_lives_beside_a_lite_file_unless_told(monkeypatch):
    monkeypatch.delenv("ARCMATCH_ARCHIVE_URI", raising=False)
    assert Settings(milvus_uri="/data/faces.db", _env_file=None).archive_root() == "/data/faces.archive"
    assert Settings(milvus_uri="http://milvus:19530", _env_file=None).archive_root() == "./arcmatch-archive"
    monkeypatch.setenv("ARCMATCH_ARCHIVE_URI", "s3://bucket/archive")
    assert Settings(_env_file=None).archive_root() == "s3://bucket/archive"  # slashes kept
    monkeypatch.setenv("ARCMATCH_ARCHIVE", "false")
    assert Settings(_env_file=None).archive_root() is None


def test_the_audit_trail_lives_beside_a_lite_file_unless_told(monkeypatch):
    monkeypatch.delenv("ARCMATCH_AUDIT_DIR", raising=False)
    assert Settings(milvus_uri="/data/faces.db", _env_file=None).audit_root() == "/data/faces.audit"
    assert Settings(milvus_uri="http://milvus:19530", _env_file=None).audit_root() == "./arcmatch-audit"
    monkeypatch.setenv("ARCMATCH_AUDIT_DIR", "s3://bucket/audit")
    assert Settings(milvus_uri="/data/faces.db", _env_file=None).audit_root() == "s3://bucket/audit"


def test_a_commands_record_is_read_back_from_beside_its_lite_file_wherever_it_ran(monkeypatch, tmp_path, capsys):
    from jobs.cli import main
    from jobs.cli.options import audit

    monkeypatch.delenv("ARCMATCH_AUDIT_DIR", raising=False)
    store = tmp_path / "data" / "faces.db"
    store.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "arcmatch-audit").mkdir(parents=True)  # a trail the old default left in this directory
    monkeypatch.chdir(elsewhere)
    audit(Settings(milvus_uri=str(store), _env_file=None), "calibrate", threshold=0.5)
    assert (tmp_path / "data" / "faces.audit").is_dir()
    assert main(["audit", "--milvus", str(store), "--json"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["action"] for line in out.splitlines()] == ["calibrate"]
    assert "arcmatch audit --dir ./arcmatch-audit" in err  # older records are pointed at, not hidden


def test_the_enrollment_conflict_check_is_on_unless_turned_off(monkeypatch):
    monkeypatch.delenv("ARCMATCH_ENROLL_CONFLICT_CHECK", raising=False)
    assert Settings().enroll_conflict_check is True


def test_every_face_of_a_photo_is_no_default_for_named_photos(monkeypatch):
    monkeypatch.setenv("ARCMATCH_FACE_SELECT", "all")
    with pytest.raises(BadInput, match="ARCMATCH_FACE_SELECT"):
        Settings.load()


def test_an_empty_model_or_detector_variable_is_unset(monkeypatch):
    monkeypatch.setenv("ARCMATCH_DETECTOR", "")
    monkeypatch.setenv("ARCMATCH_MODEL", " ")
    settings = Settings()
    assert settings.detector is None and settings.model is None


def test_a_lite_file_in_a_folder_that_does_not_exist_is_not_an_outage(tmp_path):
    from common.errors import NotFound
    from indexer.milvus import connect

    with pytest.raises(NotFound, match="folder .*nowhere does not exist"):
        connect(str(tmp_path / "nowhere" / "faces.db"))
