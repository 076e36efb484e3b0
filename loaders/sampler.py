"""ShardAwareSampler: per-epoch orders that keep reads local, split evenly.

The order of an epoch is a pure function of (seed, epoch, number of
samples per shard): shards are visited in a shuffled order and the samples
of each shard in a shuffled order, so a reader moves through one shard at a
time.  The order is then cut into ``world_size`` contiguous equal parts,
one per rank (locality again: a rank reads few shards), after padding by
repeating the order from its start or dropping the tail (``drop_last``), so
every rank gets exactly the same number of indices and DDP never waits on a
rank that ran out of batches.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import Sampler

from .dist import rank_and_world_size


def epoch_order(sample_shard: np.ndarray, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """All sample indices in the order of one epoch (pure; no torch, no I/O)."""
    n = len(sample_shard)
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, 0x5A3D]))
    shard = np.asarray(sample_shard, dtype=np.int64)
    num_shards = int(shard.max()) + 1 if n else 0
    shard_rank = rng.permutation(num_shards)
    within = rng.random(n)
    return np.lexsort((within, shard_rank[shard])).astype(np.int64)


def rank_slice(order: np.ndarray, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
    """Rank ``rank``'s equal, contiguous part of ``order`` (pure)."""
    n = len(order)
    if drop_last:
        per_rank = n // world_size
    else:
        per_rank = -(-n // world_size)
        if per_rank * world_size > n:
            repeats = -(-(per_rank * world_size) // max(n, 1))
            order = np.tile(order, repeats)[: per_rank * world_size]
    return order[rank * per_rank : (rank + 1) * per_rank]


class ShardAwareSampler(Sampler[int]):
    """Shuffled shard order, shuffled within shards, equal share per rank.

    Call :meth:`set_epoch` before each epoch (as with DistributedSampler) to
    get a new order; the same seed and epoch always give the same indices.
    """

    def __init__(
        self,
        dataset,
        shuffle: bool = True,
        seed: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        drop_last: bool = False,
    ) -> None:
        self.rank, self.world_size = rank_and_world_size(rank, world_size)
        index = getattr(dataset, "index", None)
        if index is None:
            raise TypeError("ShardAwareSampler needs a dataset with a shard index (IndexedTarDataset)")
        self.sample_shard: Sequence[int] = index.sample_shard
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        n = len(self.sample_shard)
        self.num_samples = n // self.world_size if drop_last else -(-n // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch."""
        order = epoch_order(self.sample_shard, self.seed, self.epoch, self.shuffle)
        return rank_slice(order, self.rank, self.world_size, self.drop_last)

    def __iter__(self) -> Iterator[int]:
        # In chunks: a list of every index would be a million Python ints.
        indices = self.indices()
        for start in range(0, len(indices), 65536):
            yield from indices[start : start + 65536].tolist()

    def __len__(self) -> int:
        return self.num_samples
