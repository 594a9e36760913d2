import numpy as np

from trainer.feed import _epoch_indices


def test_every_worker_gets_the_same_number_of_full_batches():
    shards = [_epoch_indices(103, epoch=2, seed=0, rank=r, world=3, batch=8) for r in range(3)]
    assert {len(s) for s in shards} == {32}
    flat = np.concatenate(shards)
    assert len(np.unique(flat)) == len(flat)  # no image on two workers in one epoch
