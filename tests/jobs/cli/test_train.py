"""`arcmatch train`: flags generated from TrainConfig (each default written once), a run from a config file."""

import json
from dataclasses import fields
from pathlib import Path

import pytest

from common.errors import BadInput
from embedder.spec import ModelSpec
from jobs.cli import build_parser
from jobs.cli.train import DEFAULT_BACKBONE, config_from
from trainer.config import CONFIG_DIR, TrainConfig


def parse(*argv):
    return build_parser().parse_args(["train", "--out", "model", *argv])


def test_without_flags_the_config_is_trainconfigs_defaults(tmp_path):
    config = config_from(parse("--data", str(tmp_path)))
    assert config == TrainConfig(data=str(tmp_path.resolve()), spec=ModelSpec(DEFAULT_BACKBONE))


def test_every_field_has_a_flag():
    options = {action.dest for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    for f in fields(TrainConfig):
        assert f.name in options or f.name in ("spec", "margins"), f.name


def test_flags_set_fields_that_had_none_before(tmp_path):
    config = config_from(parse("--data", str(tmp_path), "--weight-decay", "0.01", "--warmup-epochs", "0.5",
                               "--clip-grad-norm", "2", "--dropout", "0.1", "--seed", "7", "--log-every", "3",
                               "--keep-checkpoints", "4", "--gpu", "--m2", "0.3", "--input-size", "96"))
    assert (config.weight_decay, config.warmup_epochs, config.clip_grad_norm, config.dropout) == (0.01, 0.5, 2, 0.1)
    assert (config.seed, config.log_every, config.keep_checkpoints, config.gpu) == (7, 3, 4, True)
    assert config.margins == {"m2": 0.3} and config.spec.input_size == (96, 96)


def test_adaface_margins_have_flags(tmp_path):
    config = config_from(parse("--data", str(tmp_path), "--head", "adaface", "--m", "0.3", "--h", "0.2"))
    assert config.head == "adaface" and config.margins == {"m": 0.3, "h": 0.2}


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
def test_shipped_configs_load_and_flags_override_them(tmp_path, name):
    config = config_from(parse("--config", name, "--data", str(tmp_path), "--epochs", "3"))
    shipped = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    assert config.epochs == 3 and config.spec.backbone == shipped["spec"]["backbone"]
    assert config.batch_size == shipped["batch_size"]


def test_a_config_file_of_ones_own(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data": str(tmp_path), "spec": {"backbone": "test_resnet", "embedding_size": 16},
                                "lr": 0.01, "margins": {"m2": 0.2}}))
    config = config_from(parse("--config", str(path), "--m3", "0.1"))
    assert config.lr == 0.01 and config.spec.embedding_size == 16 and config.margins == {"m2": 0.2, "m3": 0.1}


@pytest.mark.parametrize("content, message", [
    ('{"epochz": 3}', "unknown fields"), ("[1]", "JSON object"), ("{", "not valid JSON"),
    ('{"epochs": "two"}', "epochs must be a whole number, got 'two'"), ('{"lr": "0.1"}', "lr must be a number"),
    ('{"epochs": 2.5}', "epochs must be a whole number"), ('{"weight_decay": -1}', "weight_decay must be 0 or more"),
    ('{"warmup_epochs": -1}', "warmup_epochs must be 0 or more"),
], ids=["misspelt field", "not an object", "not JSON", "text for a count", "text for a number", "a fraction of an "
        "epoch count", "negative weight decay", "negative warm-up"])
def test_a_bad_config_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BadInput, match=message):
        config_from(parse("--config", str(path), "--data", "x"))


def test_the_demo_and_the_k8s_job_use_the_shipped_files():
    root = Path(__file__).resolve().parents[3]
    assert "--config trainer/configs/r50-gpu.json" in (root / "k8s/base/rayjob-train.yaml").read_text()
    assert "read_config_file(\"demo\")" in (root / "jobs/pipelines/demo.py").read_text()
