"""The command line as a user meets it: --help everywhere, and one clear line on errors."""


import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import COMMANDS, main
from jobs.cli.options import writable
from tests.helpers import run_cli


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0


def test_cluster_help_gives_the_default_the_job_uses(capsys):
    """The help names the default as text (importing the job to read it costs a second at every start)."""
    from jobs.pipelines.cluster import RAY_FROM

    with pytest.raises(SystemExit):
        main(["cluster", "--help"])
    assert f"default {RAY_FROM:,}" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("argv", "says"), [
    (["search", "p.jpg", "--threshold", "3"], "between -1 and 1; got 3.0"),
    (["search", "p.jpg", "--threshold", "nan"], "between -1 and 1; got nan"),
    (["search", "p.jpg", "--fpir", "3"], "a rate is a share between 0 and 1"),
    (["search", "p.jpg", "--k", "0"], "must be at least 1, got 0"),
    (["reembed", "--model", "m", "--threshold", "5"], "between -1 and 1"),  # would answer every search "unknown"
    (["cluster", "--threshold", "7"], "between -1 and 1"),
    (["demo", "--far", "3"], "a rate is a share between 0 and 1"),  # before minutes of training, not after
    (["eval", "--data", "d", "--far", "7"], "a rate is a share between 0 and 1"),
    (["calibrate", "--fpir", "0"], "a rate is a share between 0 and 1"),
    (["galleries", "create", "g", "--fpir", "x"], "not a number: 'x'"),
], ids=["search-threshold", "search-nan", "search-fpir", "search-k", "reembed", "cluster", "demo", "eval", "calibrate",
        "galleries"])
def test_a_rate_or_threshold_out_of_range_is_refused_before_any_work(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "says"), [
    (["calibrate", "--plot", "/nonexistent/c.png"], "the folder /nonexistent does not exist"),
    (["calibrate", "--plot", "curve.txt"], "write it as .png, .svg, .pdf"),
    (["eval", "--data", "d", "--roc", "."], ". is a folder: name a file in it"),
    (["ingest", "photos/", "--errors", "/nonexistent/e.csv"], "the folder /nonexistent does not exist"),
    (["ingest", "photos/", "--export-parquet", "/nonexistent/v.parquet"], "the folder /nonexistent does not exist"),
    (["calibrate", "--plot", "/proc/curve.png"], "/proc/curve.png: cannot be written"),  # permissions say yes
], ids=["plot-folder", "plot-format", "roc-folder", "errors", "export", "plot-unwritable"])
def test_a_file_a_command_cannot_write_is_refused_before_its_work(argv, says, capsys):
    """Before, `ingest --errors /missing/e.csv` ingested every photo and then ended on an internal error."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert writable()("s3://bucket/vectors.parquet") == "s3://bucket/vectors.parquet"  # its filesystem's to judge


@pytest.mark.parametrize(("argv", "name"), [(["ingest", "photos/"], "ingest_errors.csv"),
                                            (["prepare", "--source", "s"], "prepare_errors.csv"),
                                            (["reembed", "--model", "m"], "reembed_errors.csv"),
                                            (["enroll", "photos/"], "enroll_errors.csv")],
                         ids=["ingest", "prepare", "reembed", "enroll"])
def test_a_report_nobody_named_goes_to_the_temp_folder_where_this_one_is_read_only(argv, name, tmp_path,
                                                                                   monkeypatch):
    """Before, the default report was checked as if given, so a run in a read-only folder was refused at once
    even when it would skip nothing. This user is root here and may write anywhere, so "not here" is os.access's
    answer for the working folder."""
    from jobs.cli import build_parser

    assert build_parser().parse_args(argv).errors == Path(name)  # where one can write: here, as before
    access = os.access
    monkeypatch.setattr("jobs.cli.options.os.access", lambda path, mode: path != "." and access(path, mode))
    monkeypatch.setattr("jobs.cli.options.tempfile.gettempdir", lambda: str(tmp_path))
    assert build_parser().parse_args(argv).errors == tmp_path / name


def test_search_given_a_folder_says_to_name_its_photos(tmp_path, capsys):
    (tmp_path / "probes").mkdir()
    assert main(["search", str(tmp_path / "probes")]) == 2
    assert f"{tmp_path / 'probes'}: a folder, not a photo; name its photos ({tmp_path / 'probes'}/*.jpg)" in \
        capsys.readouterr().err


def test_prepare_parquet_without_a_source_says_so_in_one_line():
    result = run_cli("prepare", "--parquet", "out")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--source" in result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_parquet_packs_a_tree_and_reports_unreadable_files(tmp_path):
    from embedder.sources import LabelledImage, write_manifest
    from trainer.shards import read_classes
    from trainer.synthetic import write_dataset

    paths = write_dataset(tmp_path / "tree", range(2), 3, size=32)
    write_manifest(tmp_path / "m.csv", [LabelledImage(str(p), p.parent.name) for p in paths]
                   + [LabelledImage(str(tmp_path / "missing.jpg"), "person_00000")])
    code = main(["prepare", "--source", str(tmp_path / "m.csv"), "--parquet", str(tmp_path / "shards"),
                 "--rows-per-shard", "4", "--errors", str(tmp_path / "errors.csv")])
    assert code == 3  # finished, with a file skipped
    assert read_classes(tmp_path / "shards") == ["person_00000", "person_00001"]
    assert len(list((tmp_path / "shards").glob("*.parquet"))) == 2
    assert "missing.jpg" in (tmp_path / "errors.csv").read_text()


def test_submit_without_a_cluster_says_how_to_name_one():
    result = run_cli("submit", "prepare", "--synthetic", "x", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "RAY_ADDRESS" in result.stderr and "Traceback" not in result.stderr


def test_serve_without_settings_names_what_is_missing(tmp_path):
    result = run_cli("serve", cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "ARCMATCH_MODEL" in result.stderr and "ARCMATCH_API_KEYS" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_is_one_line_not_a_traceback(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    result = run_cli("search", str(image), "--model", str(tmp_path / "nope"), "--milvus", str(tmp_path / "m.db"))
    assert result.returncode == 4
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_prepare_synthetic(tmp_path):
    assert main(["prepare", "--synthetic", str(tmp_path / "s"), "--identities", "2", "--images", "2",
                 "--size", "32"]) == 0
    assert len(list((tmp_path / "s").rglob("*.png"))) == 4
    assert main(["prepare", "--synthetic", str(tmp_path / "s"), "--identities", "3"]) == 6  # not mixed in
    assert main(["prepare", "--synthetic", str(tmp_path / "t"), "--source", str(tmp_path / "s")]) == 2  # which?
    assert len(list((tmp_path / "s").rglob("*.png"))) == 4 and not (tmp_path / "t").exists()


def test_eval_calibrates_into_the_checkpoint(tmp_path, tiny_model_dir):
    import shutil

    from embedder.checkpoint import Calibration
    from trainer.synthetic import write_dataset

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "calibration.json").unlink()
    write_dataset(tmp_path / "held", range(5), 4, size=32)
    assert main(["eval", "--model", str(model), "--data", str(tmp_path / "held"), "--far", "0.1",
                 "--calibrate"]) == 0
    calibration = Calibration.load(model)
    assert calibration.target_far == 0.1 and calibration.measured_far <= 0.1
    assert calibration.tail_reference is None  # five people say nothing of a tail far out


def test_eval_keeps_the_tail_reference_of_enough_held_out_identities(tmp_path, tiny_model_dir, capsys):
    """From MIN_REFERENCE identities on, the model keeps their non-mated tail, and a gallery made with it takes
    the reference into its collection's record for small galleries' calibrations (indexer/reference.py)."""
    import shutil

    from embedder.checkpoint import Calibration
    from indexer.reference import MIN_REFERENCE
    from trainer.synthetic import write_dataset

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    write_dataset(tmp_path / "held", range(MIN_REFERENCE), 2, size=32)
    assert main(["eval", "--model", str(model), "--data", str(tmp_path / "held"), "--calibrate"]) == 0
    kept = Calibration.load(model).tail_reference
    assert kept["identities"] == MIN_REFERENCE and len(kept["tables"]) == 5
    out = capsys.readouterr().out
    assert f"tail reference: {MIN_REFERENCE} held-out identities" in out and "and the tail reference" in out


def test_eval_calibrates_for_an_fpir_in_a_planned_gallery(tmp_path, tiny_model_dir, capsys):
    import shutil

    from embedder.checkpoint import Calibration
    from trainer.synthetic import write_dataset

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    write_dataset(tmp_path / "held", range(12), 4, size=32)
    assert main(["eval", "--model", str(model), "--data", str(tmp_path / "held"), "--fpir", "0.05",
                 "--gallery-shape", "3x2", "--calibrate"]) == 0
    calibration = Calibration.load(model)
    assert calibration.target_fpir == 0.05 and calibration.target_far is None
    assert calibration.trials == 20 * (12 - 3) * 4  # 20 mock galleries, every photo of the 9 others each
    out = capsys.readouterr().out
    assert "for FPIR 0.05 in galleries of 3x2" in out and "rank-1 in those galleries" in out


@pytest.mark.parametrize("flags", [["--fpir", "0.05"], ["--gallery-shape", "3x2"],
                                   ["--fpir", "0.05", "--gallery", "12"],  # the older spelling still works
                                   ["--fpir", "0.05", "--gallery", "3x2", "--pairs", "pairs.txt"]],
                         ids=["fpir-alone", "gallery-alone", "gallery-of-everyone", "with-pairs"])
def test_eval_refuses_an_fpir_it_cannot_measure(tmp_path, tiny_model_dir, flags, capsys):
    from trainer.synthetic import write_dataset

    write_dataset(tmp_path / "held", range(12), 3, size=32)
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "held"), *flags]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # one line says why


@pytest.mark.parametrize("text", ["0x3", "ax2", "5x0"])
def test_a_gallery_shape_is_people_x_photos(text):
    from jobs.cli.model import gallery_shape

    assert gallery_shape("50x3") == (50, 3) and gallery_shape("50") == (50, 1)
    with pytest.raises(argparse.ArgumentTypeError):
        gallery_shape(text)


def test_eval_on_a_pairs_file_writes_a_roc_plot(tmp_path, tiny_model_dir, capsys):
    from PIL import Image

    from trainer.synthetic import make_identity, render

    lines = ["2\t3"]
    for person in range(4):
        rng = np.random.default_rng(person)
        folder = tmp_path / "tree" / f"p{person}"
        folder.mkdir(parents=True)
        for n in range(1, 4):
            Image.fromarray(render(make_identity(0, person), rng, 32)).save(folder / f"p{person}_{n:04d}.jpg")
    for fold in range(2):
        a, b = 2 * fold, 2 * fold + 1
        lines += [f"p{a}\t1\t2", f"p{a}\t1\t3", f"p{b}\t2\t3"]
        lines += [f"p{a}\t1\tp{b}\t1", f"p{a}\t2\tp{b}\t2", f"p{a}\t3\tp{b}\t3"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "tree"), "--pairs",
                 str(tmp_path / "pairs.txt"), "--flip-tta", "--roc", str(tmp_path / "roc.png"), "--far", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "(2-fold)" in out and "ROC curve in" in out
    assert "tail reference" not in out  # nothing is kept without --calibrate: nothing said of it
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_eval_align_finds_the_faces_of_raw_photos(tmp_path, tiny_model_dir, shared_data, capsys, monkeypatch):
    """`eval --align`: each pair image goes through the face detector and the five-point alignment first."""
    detector = shared_data.parent / "models" / "yunet" / "face_detection_yunet_2026may.onnx"
    names = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"]
    lines = ["2\t2"]
    for fold in range(2):
        a, b = names[2 * fold], names[2 * fold + 1]
        lines += [f"{a}\t1\t2", f"{b}\t1\t2", f"{a}\t1\t{b}\t1", f"{a}\t2\t{b}\t2"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(shared_data / "lfw_gray"), "--pairs",
                 str(tmp_path / "pairs.txt"), "--align", "--detector", str(detector), "--far", "0.5"]) == 0
    assert "(2-fold)" in capsys.readouterr().out
    monkeypatch.delenv("ARCMATCH_DETECTOR", raising=False)
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(shared_data / "lfw_gray"), "--pairs",
                 str(tmp_path / "pairs.txt"), "--align"])
    assert code == 2 and "ARCMATCH_DETECTOR" in capsys.readouterr().err


def test_a_listing_piped_into_head_ends_quietly(tmp_path):
    import subprocess

    db = str(tmp_path / "many.db")
    write = ("from indexer.galleries import Galleries\nfrom indexer.store import CollectionInfo, connect\n"
             "from tests.helpers import TINY_DIM, people\n"
             f"index = Galleries(connect({db!r}), 'faces').open(CollectionInfo('tiny', TINY_DIM, 0.5), create=True,"
             " index_type='FLAT')\n"
             "index.upsert(people(4000, 1, spread=0.1, dim=TINY_DIM))\nindex.flush()\n")  # more than a pipe holds
    subprocess.run([sys.executable, "-c", write], check=True, timeout=300, cwd=Path(__file__).parents[3])
    env = {**os.environ, "ARCMATCH_MILVUS_URI": db, "ARCMATCH_GALLERY": "faces"}
    env.pop("ARCMATCH_MODEL", None)  # a listing needs no model
    done = subprocess.run(f"{sys.executable} -m jobs.cli identities --json | head -n 2", shell=True,
                          capture_output=True, text=True, env=env, timeout=300)
    assert len(done.stdout.splitlines()) == 2 and done.stderr == "", done.stderr


def test_a_commands_flags_may_come_between_its_photos():
    from jobs.cli import _parse, build_parser

    args = _parse(build_parser(), ["-v", "search", "a.jpg", "--json", "b.jpg", "--faces", "largest", "c.jpg"])
    assert args.images == ["a.jpg", "b.jpg", "c.jpg"] and args.json and args.faces == "largest" and args.verbose
    with pytest.raises(SystemExit):  # a flag no command has is still refused
        _parse(build_parser(), ["search", "a.jpg", "--bogus", "b.jpg"])


def test_submit_takes_its_own_flags_after_the_jobs_arguments():
    from jobs.cli import _parse, build_parser
    from jobs.cli.submit import own_flags

    args = own_flags(_parse(build_parser(), ["submit", "ingest", "photos", "--address", "http://head:8265",
                                             "--unlabelled", "--no-follow"]))
    assert (args.address, args.no_follow, args.args) == ("http://head:8265", True, ["photos", "--unlabelled"])
    args = own_flags(_parse(build_parser(), ["submit", "--address=http://a:8265", "cluster", "--address=http://b:8265"]))
    assert (args.address, args.no_follow, args.args) == ("http://b:8265", False, [])


@pytest.mark.parametrize("address", ["notaurl", "http://127.0.0.1:99999"])
def test_an_address_that_is_no_clusters_is_one_line(address, capsys, monkeypatch):
    # the jobs client sets RAY_AUTH_MODE where a Ray token is on hand (as Ray's CLI does): not for this process's
    # later tests, whose local Ray would then start expecting one
    monkeypatch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "disabled"))
    assert main(["jobs", "list", "--address", address]) == 2
    err = capsys.readouterr().err
    assert "is no address of a Ray cluster" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_the_audit_table_names_both_identities_of_a_pair_a_merge_and_a_move(tmp_path, capsys):
    from jobs.audit import AuditLog

    trail = AuditLog(tmp_path / "audit")
    for record in ({"action": "distinct", "identity": "Ann", "other": "Anne"},
                   {"action": "merge_identity", "identity": "Bob", "merged_from": "Robert"},
                   {"action": "move_face", "identity": "Cy", "moved_to": "Di", "face_ids": ["7"]}):
        trail.append({"status": 200, "key": "admin", "gallery": "staff", **record})
    trail.close()
    assert main(["audit", "--dir", str(tmp_path / "audit")]) == 0
    shown = capsys.readouterr().out
    assert "Ann / Anne" in shown and "Robert -> Bob" in shown and "Cy -> Di" in shown


def test_a_search_line_says_the_rate_asked_for():
    from jobs.cli.search import _line

    said = _line("p.jpg", 0, 1, [0, 0, 9, 9], None, 0.31, 0.4578, "fpir", 0.001)
    assert said.endswith("unknown\tscore 0.3100 (threshold 0.4578, for your FPIR 0.001 at the gallery's size now)")
