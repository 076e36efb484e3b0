"""ShardAwareSampler: the streaming loader's epoch order, for random access.

The sampler yields the same global order as :class:`loaders.StreamingTarDataset`
with the same ``seed``, ``shuffle_buffer`` and ``chunk_samples``: shuffled
chunks of consecutive samples mixed in windows (:mod:`loaders.order`), so
reads stay local, dealt to ranks in global batches (:mod:`loaders.split`),
so every rank gets exactly the same number of indices and the job consumes
the order front to back whatever its shape.  Switching loaders, or the
number of ranks, does not change which samples a global batch holds.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Optional

import numpy as np
from torch.utils.data import Sampler

from .dist import rank_and_world_size
from .order import EpochOrder, default_chunk_samples
from .split import Deal, dealt_samples
from .state import index_fingerprint, make_state, read_state


class ShardAwareSampler(Sampler[int]):
    """Shuffled chunks of shards, mixed in windows; equal shares per rank.

    Parameters
    ----------
    dataset:
        An :class:`loaders.IndexedTarDataset` (anything with an ``index``).
    shuffle, seed, shuffle_buffer, chunk_samples:
        The epoch order, as for :class:`loaders.StreamingTarDataset`.
    batch_size:
        The per-rank batch size of the DataLoader.  With it, rank ``r``'s
        batch ``k`` is slice ``r`` of global batch ``k`` (positions
        ``k x world x batch ..``), so the samples of every global batch, in
        order, are the same for any number of ranks; with the default 1 they
        are the same as a set.
    drop_last:
        ``False`` pads by repeating up to ``world_size - 1`` samples from the
        start of the epoch; ``True`` drops up to ``world_size - 1``.
    rank, world_size:
        Default: torch.distributed, else ``RANK``/``WORLD_SIZE``, else 0, 1.

    Call :meth:`set_epoch` before each epoch (as with DistributedSampler),
    or let it advance by itself: each complete iteration moves to the next
    epoch.  The same seed and epoch always give the same indices.
    """

    def __init__(
        self,
        dataset: Any,
        shuffle: bool = True,
        seed: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        drop_last: bool = False,
        batch_size: int = 1,
        shuffle_buffer: int = 1024,
        chunk_samples: Optional[int] = None,
    ) -> None:
        self._given = (rank, world_size)
        self.rank, self.world_size = rank_and_world_size(rank, world_size)
        index = getattr(dataset, "index", None)
        if index is None:
            raise TypeError("ShardAwareSampler needs a dataset with a shard index (IndexedTarDataset)")
        if shuffle_buffer < 1 or batch_size < 1:
            raise ValueError("shuffle_buffer and batch_size must be at least 1")
        self.index = index
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.batch_size = int(batch_size)
        self.window = int(shuffle_buffer)
        self.chunk = int(chunk_samples) if chunk_samples is not None else default_chunk_samples(shuffle_buffer)
        self.epoch = 0
        self.start = 0
        self._shard_counts = index.shard_counts()
        self._progress: Optional[Dict[str, Any]] = None
        self._fingerprint: Optional[str] = None

    @property
    def num_samples(self) -> int:
        return int(self._shard_counts.sum())

    def deal(self) -> Deal:
        # The sampler lives in the main process: look again, in case the
        # process group was initialized after the sampler was made.
        self.rank, self.world_size = rank_and_world_size(*self._given)
        return Deal(self.num_samples, self.world_size, self.batch_size, self.drop_last, self.start)

    def order(self, epoch: int) -> EpochOrder:
        return EpochOrder.build(self._shard_counts, self.seed, epoch, self.shuffle, self.chunk, self.window)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order, from its start, for the next iteration."""
        self.epoch = int(epoch)
        self.start = 0
        self._progress = None

    def indices(self) -> np.ndarray:
        """This rank's indices for the next iteration, as one array."""
        parts = list(self._index_blocks())
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _index_blocks(self) -> Iterator[np.ndarray]:
        return dealt_samples(self.deal(), self.order(self.epoch), self.rank, 0, 1)

    def __iter__(self) -> Iterator[int]:
        progress = self._progress = {"epoch": self.epoch, "start": self.start, "yielded": 0, "done": False}
        for block in self._index_blocks():
            for i in block.tolist():
                progress["yielded"] += 1
                yield i
        progress["done"] = True
        self.epoch, self.start = progress["epoch"] + 1, 0

    def __len__(self) -> int:
        return self.deal().rank_share

    # ---------------------------------------------------------------- resume

    def _order_params(self) -> Dict[str, Any]:
        return {"seed": self.seed, "shuffle": self.shuffle, "chunk_samples": self.chunk, "window_samples": self.window}

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = index_fingerprint(self.index)
        return self._fingerprint

    def state_for(self, epoch: int, start: int, consumed: int) -> Dict[str, Any]:
        """The state after this rank consumed ``consumed`` indices of the
        iteration that began at ``(epoch, start)`` (all ranks in step)."""
        self.deal()  # current rank and world size
        deal = Deal(self.num_samples, self.world_size, self.batch_size, self.drop_last, start)
        return make_state(self._order_params(), epoch, deal.position_after(consumed), self.num_samples, self.fingerprint())

    def state_dict(self) -> Dict[str, Any]:
        """Where the job is, counting the indices this sampler has handed
        out: exact with ``num_workers=0``; DataLoader workers prefetch, so
        with workers use :class:`loaders.ResumableLoader`."""
        progress = self._progress
        if progress is None:
            return self.state_for(self.epoch, self.start, 0)
        if progress["done"]:
            return self.state_for(progress["epoch"] + 1, 0, 0)
        return self.state_for(progress["epoch"], progress["start"], progress["yielded"])

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved state with this job's world size."""
        self.epoch, self.start = read_state(state, self._order_params(), self.num_samples, self.fingerprint())
        self._progress = None
