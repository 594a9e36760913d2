"""A run resumes with the settings it learns by (trainer/run_record.py): the machine's may change, and the number
of epochs with a note; the rest is refused in one line that names what changed."""

from dataclasses import replace

import pytest

from common.errors import BadInput
from trainer.config import TrainConfig
from trainer.run_record import check_or_record


def test_a_resume_keeps_what_the_run_learns_by(tmp_path, tiny_spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    config = TrainConfig(data="data", spec=tiny_spec, batch_size=32, lr=0.1, epochs=8)
    run = tmp_path / "runs" / "r3"
    assert check_or_record(run, config) is None  # a new run: recorded
    assert check_or_record(run, replace(config, data=str(tmp_path / "data"), workers=2, log_every=5)) is None
    with pytest.raises(BadInput, match=r"run 'r3' was started with other settings \(batch_size 32 -> 16, lr 0.1 -> "
                                       r"0.01\)"):
        check_or_record(run, replace(config, batch_size=16, lr=0.01))
    assert "planned for 8 epochs and goes on to 10" in check_or_record(run, replace(config, epochs=10))
    assert check_or_record(run, replace(config, epochs=10)) is None  # the plan is 10 now
