"""The demo end to end at its tiny size: real Ray Train, real Ray Data, real Milvus Lite."""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedder.layout import Calibration
from embedder.sources import LabelledImage, list_images
from jobs.pipelines.demo import SIZES, draw_synthetic, plan_groups, split_identities, training_config
from tests.helpers import run_cli
from trainer.config import read_config_file
from trainer.step import cpu_has_native_bf16


def test_split_keeps_identity_groups_disjoint():
    items = [LabelledImage(f"{i}/{j}.png", f"p{i}") for i in range(80) for j in range(3)]
    items += [LabelledImage(f"single{i}.png", f"s{i}") for i in range(5)]
    split = split_identities(items, SIZES["tiny"])
    groups = [{i.identity for i in getattr(split, name)} for name in ("train", "calibration", "gallery")]
    groups.append({i.identity for i in split.unknown_probes})
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    assert {i.identity for i in split.known_probes} == groups[2]
    tiny = SIZES["tiny"]
    assert len(split.gallery) == tiny.enrolled_identities * tiny.gallery_images
    small = split_identities(items[:60], tiny)  # 20 people: most stay for training
    assert len({i.identity for i in small.train}) >= 14


def test_the_default_size_draws_exactly_its_groups_and_a_small_real_set_keeps_most_for_training():
    size = SIZES["default"]
    total = size.train_identities + size.calibration_identities + size.enrolled_identities + size.unknown_identities
    groups = plan_groups({f"p{i}": 16 for i in range(total)}, size)
    assert [len(g) for g in (groups.train, groups.calibration, groups.enrolled, groups.unknown)] == [
        size.train_identities, size.calibration_identities, size.enrolled_identities, size.unknown_identities]
    orl = plan_groups({f"s{i}": 10 for i in range(40)}, size)  # ORL's 40 people
    assert len(orl.train) >= 24 and min(len(orl.calibration), len(orl.enrolled), len(orl.unknown)) >= 2


def test_training_identities_can_have_more_photos_and_the_held_out_groups_stay_the_same(tmp_path):
    tiny = SIZES["tiny"]
    draw_synthetic(tmp_path / "same", tiny, seed=0)
    draw_synthetic(tmp_path / "more", replace(tiny, train_images=8), seed=0)
    same = split_identities(list_images(tmp_path / "same"), tiny)
    more = split_identities(list_images(tmp_path / "more"), tiny)
    for name in ("calibration", "gallery", "known_probes", "unknown_probes"):
        a, b = getattr(same, name), getattr(more, name)
        assert [i.identity for i in a] == [i.identity for i in b], name
        assert [Path(i.path).read_bytes() for i in a] == [Path(i.path).read_bytes() for i in b], name
    assert len(same.train) == tiny.train_identities * 6 and len(more.train) == tiny.train_identities * 8
    extra = [i for i in more.train if int(Path(i.path).stem) >= 6]
    assert len(extra) == tiny.train_identities * 2
    firsts = [i for i in more.train if int(Path(i.path).stem) < 6]
    assert [Path(i.path).read_bytes() for i in firsts] == [Path(i.path).read_bytes() for i in same.train]


def test_training_follows_the_demo_config_then_the_size_then_a_spec(tmp_path, tiny_spec):
    """What `run_demo(size=..., spec=...)` trains (bench/demo_budget.py runs its budgets through it)."""
    shipped = training_config(tmp_path / "train.csv", SIZES["default"], None, seed=3)
    demo = read_config_file("demo")
    assert (shipped.epochs, shipped.random_erase) == (demo["epochs"], demo["random_erase"]) and shipped.seed == 3
    assert shipped.spec.backbone_args["global_pool"] == "" and shipped.data == str(tmp_path / "train.csv")
    tiny = training_config(tmp_path / "train.csv", SIZES["tiny"], tiny_spec, seed=0)
    assert tiny.spec == tiny_spec and (tiny.epochs, tiny.batch_size) == (2, 32) and tiny.weight_decay == 0.05
    assert training_config(tmp_path / "t.csv", replace(SIZES["tiny"], training={"seed": 7}), None, 0).seed == 7


def figure(report: str, label: str) -> float:
    """The number the demo's report prints right after `label` ("nan" too, which then fails every bound)."""
    return float(re.search(re.escape(label) + r"\s*([^\s,()]+)", report).group(1))


@pytest.mark.slow
def test_the_demo_runs_end_to_end_and_shows_progress_and_a_report_not_rays_logs(tmp_path):
    """`arcmatch demo` at its tiny size, through pipes as in CI: the whole path (training, calibration, ingestion,
    lookups) and what a person sees: no Ray core-worker error lines, no Ray Train or Ray Data chatter, no colour
    codes; stage lines and the report."""
    result = run_cli("demo", "--size", "tiny", "--workdir", str(tmp_path / "demo"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = result.stdout + result.stderr
    assert "\x1b[" not in shown  # no ANSI codes when not on a terminal
    lines = shown.splitlines()
    assert not [line for line in lines if " E " in line or "core_worker" in line]
    assert not [line for line in lines if "Checkpoint successfully created" in line or "TrainController" in line
                or "Reporting training result" in line or "Running Dataset" in line]
    assert "arcmatch demo report" in result.stdout and "unknown probes rejected" in result.stdout
    assert "wall time: data" in result.stdout and "train" in result.stdout
    assert len(lines) < 40, shown

    report, tiny = result.stdout, SIZES["tiny"]
    loss = next(line for line in report.splitlines() if "training loss:" in line)
    assert np.isfinite(figure(loss, "training loss:")) and np.isfinite(figure(loss, "->"))
    assert loss.endswith(" s, bf16)" if cpu_has_native_bf16() else " s, fp32)")  # what auto chose on this CPU
    assert figure(report, "rows in collection") == tiny.enrolled_identities * tiny.gallery_images
    assert figure(report, "skipped") == 0
    rank1, nearest = figure(report, "above threshold):"), figure(report, "nearest gallery identity correct:")
    rejected, separation = figure(report, "unknown probes rejected:"), figure(report, "unknown probes, rank-1")
    assert 0.0 <= rank1 <= nearest <= 1.0 and 0.0 <= rejected <= 1.0 and 0.0 <= separation <= nearest
    low1, high1, low2, high2 = map(float, re.search(
        r"resampled identities: rank-1 ([0-9.]+)-([0-9.]+), rejected ([0-9.]+)-([0-9.]+)", report).groups())
    assert low1 <= rank1 <= high1 and low2 <= rejected <= high2
    assert -1.0 <= figure(report, "threshold: cosine") <= 1.0
    saved = Calibration.load(tmp_path / "demo" / "model")  # chosen for the FPIR, in galleries of the demo's shape
    assert saved.target_fpir == 0.02 and saved.target_far is None and saved.trials > 0
    assert saved.threshold == pytest.approx(figure(report, "threshold: cosine"), abs=1e-4)
    assert 0.0 <= figure(report, "rank-1 there") <= 1.0
