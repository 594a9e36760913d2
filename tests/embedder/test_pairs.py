import numpy as np
import pytest

from common.errors import BadInput, NotFound
from embedder.pairs import read_pairs


def write_pairs(path, folds=2, per_half=2):
    lines = [f"{folds}\t{per_half}"]
    for f in range(folds):
        lines += [f"a{f}\t1\t2"] * per_half + [f"a{f}\t1\tb{f}\t1"] * per_half
    path.write_text("\n".join(lines) + "\n")


def test_folds_and_labels(tmp_path):
    write_pairs(tmp_path / "pairs.txt")
    pairs = read_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert pairs.same.tolist() == [True, True, False, False] * 2
    assert pairs.fold.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pairs.left[0] == str(tmp_path / "lfw" / "a0" / "a0_0001.jpg")
    assert pairs.right[2] == str(tmp_path / "lfw" / "b0" / "b0_0001.jpg")
    assert len(pairs.images()) == 6


def test_wrong_counts_are_refused(tmp_path):
    (tmp_path / "p.txt").write_text("10\t300\nA\t1\t2\n")
    with pytest.raises(BadInput, match="expected 6000"):
        read_pairs(tmp_path / "p.txt", tmp_path)


def test_official_file_when_present(shared_data):
    pairs = read_pairs(shared_data / "lfw_pairs.txt", shared_data / "lfw_gray")
    assert len(pairs.same) == 6000 and pairs.same.sum() == 3000
    assert np.bincount(pairs.fold).tolist() == [600] * 10


def test_a_missing_pairs_file_is_not_found_naming_it(tmp_path):
    with pytest.raises(NotFound, match="pairs file .*nothere.txt does not exist"):
        read_pairs(tmp_path / "nothere.txt", tmp_path)
