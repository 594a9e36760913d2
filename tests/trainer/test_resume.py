"""Which checkpoint a resumed run starts from: complete ones only, the furthest first; on a real run:
tests/trainer/test_ray_loop.py."""

import json

import torch

from trainer.resume import ahead, complete, newest_complete, remove_unkept
from trainer.state import STATE_FILE, Position


def _checkpoint(folder, epoch, samples, blocks=((0, 6),), classes=6):
    folder.mkdir(parents=True)
    torch.save({"weights": torch.zeros(3)}, folder / STATE_FILE)
    for start, end in blocks:
        torch.save({"weight": torch.zeros(end - start, 2)}, folder / f"head_{start:09d}_{end:09d}.pt")
    (folder / "position.json").write_text(json.dumps({"epoch": epoch, "samples": samples, "history": [],
                                                      "classes": classes}))
    return folder


def test_a_checkpoint_is_complete_only_with_every_file_whole(tmp_path):
    assert complete(_checkpoint(tmp_path / "checkpoint_a", 1, 0)).position == Position(1, 0)
    cut = _checkpoint(tmp_path / "checkpoint_b", 1, 0)
    (cut / STATE_FILE).write_bytes((cut / STATE_FILE).read_bytes()[:-40])
    assert complete(cut) is None
    # two workers' blocks, the second never landed; or landed short of the class count
    assert complete(_checkpoint(tmp_path / "checkpoint_c", 1, 0, blocks=((3, 6),))) is None
    assert complete(_checkpoint(tmp_path / "checkpoint_d", 1, 0, blocks=((0, 3),))) is None
    assert complete(_checkpoint(tmp_path / "checkpoint_e", 1, 0, blocks=((0, 3), (3, 6)))) is not None
    missing = _checkpoint(tmp_path / "checkpoint_f", 1, 0)
    (missing / "position.json").unlink()
    assert complete(missing) is None


def test_the_furthest_complete_checkpoint_is_chosen_and_the_superseded_removed(tmp_path):
    run = tmp_path / "run"
    first = _checkpoint(run / "checkpoint_2026-01-01_00-00-01", 0, 32)
    end = _checkpoint(run / "checkpoint_2026-01-01_00-00-02", 1, 0)
    cut = _checkpoint(run / "checkpoint_2026-01-01_00-00-03", 1, 8)
    (cut / "head_000000000_000000006.pt").write_bytes(b"PK\x03\x04 cut short")
    assert newest_complete(run).path == end
    assert newest_complete(tmp_path / "no run") is None
    assert ahead(str(end), first) and not ahead(str(first), end) and not ahead(str(end), end)
    assert ahead(str(end), None) and not ahead(None, end)
    later = _checkpoint(run / "checkpoint_2026-01-01_00-00-04", 2, 0)
    assert remove_unkept(run, []) == []  # nothing kept: nothing known to be superseded
    assert remove_unkept(run, [end, later]) == [first, cut]
    assert sorted(p.name for p in run.iterdir()) == [end.name, later.name]
