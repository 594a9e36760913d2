"""Verification pairs files in the LFW View 2 format, read against an image tree.

First line `folds pairs_per_half`; then per fold `pairs_per_half` matched lines (`name i j`) followed by as many
mismatched lines (`name1 i name2 j`). Image i of a person is `<root>/<name>/<name>_<i:04d>.<ext>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import BadInput, NotFound


@dataclass(frozen=True)
class PairList:
    left: list[str]  # image paths
    right: list[str]
    same: np.ndarray  # bool
    fold: np.ndarray  # int, 0-based

    def images(self) -> list[str]:
        """Every image the pairs use, once, in a stable order."""
        return sorted(set(self.left) | set(self.right))


def read_pairs(pairs_file: str | Path, root: str | Path, suffix: str = ".jpg") -> PairList:
    pairs_file, root = Path(pairs_file), Path(root)
    if not pairs_file.is_file():
        raise NotFound(f"pairs file {pairs_file} does not exist")
    lines = [line.split() for line in pairs_file.read_text().splitlines() if line.strip()]
    if not lines or len(lines[0]) != 2:
        raise BadInput(f"{pairs_file}: the first line must be `folds pairs_per_half`")
    folds, per_half = int(lines[0][0]), int(lines[0][1])
    body = lines[1:]
    if len(body) != folds * per_half * 2:
        raise BadInput(f"{pairs_file}: expected {folds * per_half * 2} pair lines, found {len(body)}")

    def image(name: str, index: str) -> str:
        return str(root / name / f"{name}_{int(index):04d}{suffix}")

    left, right, same, fold = [], [], [], []
    for n, parts in enumerate(body):
        if len(parts) == 3:
            left.append(image(parts[0], parts[1]))
            right.append(image(parts[0], parts[2]))
            same.append(True)
        elif len(parts) == 4:
            left.append(image(parts[0], parts[1]))
            right.append(image(parts[2], parts[3]))
            same.append(False)
        else:
            raise BadInput(f"{pairs_file}: line {n + 2} has {len(parts)} fields, expected 3 or 4")
        fold.append(n // (2 * per_half))
    return PairList(left, right, np.asarray(same), np.asarray(fold))
