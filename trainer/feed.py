"""Where a worker's batches come from: an image tree decoded into memory, or Parquet shards streamed by Ray Data.

Both yield uint8 image batches of exactly batch_size rows with their labels, and both keep every worker at the
same number of steps, which DDP and the sharded head's all-gather need:
- in memory, each epoch is one shared permutation cut into equal slices per worker;
- streamed, Ray Data's split hands workers nearly equal rows, some rows may fail to decode, so before each step the
  workers agree (an all-reduce of one flag) that every one of them has a full batch, and the epoch ends for all
  when the first runs out.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist

from common.errors import BadInput
from embedder.sources import decode_items, list_images
from trainer.config import TrainConfig
from trainer.shards import read_classes

Batch = tuple[np.ndarray, np.ndarray]  # uint8 (N, H, W, 3), int64 (N,)


def _epoch_indices(n: int, epoch: int, seed: int, rank: int, world: int, batch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_worker = (n // world) // batch * batch
    return perm[rank * per_worker : (rank + 1) * per_worker]


class MemoryFeed:
    """The whole image tree or CSV manifest, decoded once per worker."""

    def __init__(self, config: TrainConfig, rank: int, world: int) -> None:
        self.config, self.rank, self.world = config, rank, world
        self.data = decode_items(list_images(config.data), config.spec)
        self.classes = self.data.classes
        self.steps_per_epoch = len(self.data.labels) // world // config.batch_size  # what _order cuts per worker
        if self.steps_per_epoch == 0:
            raise BadInput(f"{len(self.data.labels)} images cannot fill one batch of {config.batch_size} on each "
                             f"of {world} workers")

    def _order(self, epoch: int) -> np.ndarray:
        return _epoch_indices(len(self.data.labels), epoch, self.config.seed, self.rank, self.world,
                              self.config.batch_size)

    def epoch(self, epoch: int, first_step: int) -> Iterator[Batch]:
        order, size = self._order(epoch), self.config.batch_size
        for step in range(first_step, self.steps_per_epoch):
            idx = order[step * size : (step + 1) * size]
            yield self.data.images[idx], self.data.labels[idx]

    def skipped(self) -> list[tuple[str, str]]:
        return self.data.skipped


class StreamFeed:
    """This worker's split of the Ray Data dataset of decoded shard rows (see trainer/shards.py)."""

    def __init__(self, config: TrainConfig, world: int, shard, rows: int, device: torch.device) -> None:
        self.config, self.world, self.shard, self.device = config, world, shard, device
        self.classes = read_classes(config.data)
        self.steps_per_epoch = rows // world // config.batch_size  # at most; failed decodes can end an epoch early
        if self.steps_per_epoch == 0:
            raise BadInput(f"{rows} rows cannot fill one batch of {config.batch_size} on each of {world} workers")
        self._skipped: dict[str, str] = {}

    def epoch(self, epoch: int, first_step: int) -> Iterator[Batch]:
        """Full batches of decoded rows; the first `first_step` are drawn and dropped (a resumed epoch)."""
        size = self.config.batch_size
        images, labels = [], []
        rows = self.shard.iter_batches(batch_size=size, batch_format="numpy", local_shuffle_buffer_size=4 * size,
                                       local_shuffle_seed=self.config.seed + epoch)

        def full_batches() -> Iterator[Batch]:
            nonlocal images, labels
            for batch in rows:
                ok = batch["ok"]
                for path in batch["path"][~ok]:
                    self._skipped[str(path)] = "cannot decode image"
                images.append(batch["image"][ok])
                labels.append(batch["label"][ok])
                while sum(len(part) for part in labels) >= size:
                    all_images, all_labels = np.concatenate(images), np.concatenate(labels)
                    images, labels = [all_images[size:]], [all_labels[size:]]
                    yield all_images[:size], all_labels[:size]

        source = full_batches()
        for step in range(self.steps_per_epoch):
            batch = next(source, None)
            if not self._everyone_has(batch is not None):
                return
            if step >= first_step:
                yield batch

    def _everyone_has(self, have: bool) -> bool:
        if self.world == 1:
            return have
        flag = torch.tensor([int(have)], device=self.device)  # NCCL reduces GPU tensors only
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def skipped(self) -> list[tuple[str, str]]:
        """Rows that failed to decode on any worker so far (a collective: every worker calls it together)."""
        found = [self._skipped]
        if self.world > 1:
            found = [None] * self.world
            dist.all_gather_object(found, self._skipped)
        return sorted({path: reason for part in found for path, reason in part.items()}.items())
