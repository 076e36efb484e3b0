"""ResumableLoader: a DataLoader that knows how far the training loop got.

A DataLoader cannot ask its workers where they are, and its workers (and
its sampler) run ahead of the training loop by the prefetched batches.
What the loop has really consumed is the number of batches this loader has
handed to it; with the global order of :mod:`loaders.order` dealt in global
batches (:mod:`loaders.split`) that count alone says which positions of the
epoch the whole job has consumed.  This wrapper counts them, turns them into
a state with ``state_dict()``, and sets the epoch and start position on the
dataset (or sampler) before each iteration, so DataLoader workers start from
the right place.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Optional

from torch.utils.data import DataLoader

from .sampler import ShardAwareSampler
from .streaming import StreamingTarDataset


class ResumableLoader(DataLoader):
    """``torch.utils.data.DataLoader`` with ``state_dict``/``load_state_dict``.

    Use it over a :class:`loaders.StreamingTarDataset` that batches in its
    pipeline (``.batched(b)``, loader ``batch_size=None``), or over an
    :class:`loaders.IndexedTarDataset` with a :class:`loaders.ShardAwareSampler`
    (loader ``batch_size=b``, sampler ``batch_size=b``).  Every complete
    iteration moves to the next epoch; ``set_epoch`` starts an epoch anew.

    Save ``loader.state_dict()`` with the checkpoint (take it on any rank:
    ranks in step have the same state) and call ``load_state_dict`` after a
    restart, with any number of ranks and workers: the next iteration yields
    exactly the samples of that epoch not consumed before.
    """

    def __init__(self, dataset: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        if isinstance(self.sampler, ShardAwareSampler):
            self._target: Any = self.sampler
            self._per_batch = self.batch_size or 1
            if self._target.batch_size not in (1, self._per_batch):
                raise ValueError(
                    f"the sampler deals batches of {self._target.batch_size} but the loader makes batches of {self._per_batch}"
                )
        elif isinstance(dataset, StreamingTarDataset):
            self._target = dataset
            batch = dataset._batch
            if batch is None and (self.batch_size or 1) > 1 and self.num_workers > 1:
                raise ValueError(
                    "with DataLoader workers, batch inside the pipeline (dataset.batched(b), "
                    "ResumableLoader(..., batch_size=None)) so that batches cover whole slices of the order"
                )
            if batch is not None and self.batch_size is not None and self.num_workers > 1:
                raise ValueError(
                    "the pipeline batches already: use batch_size=None, so that each loader batch is one "
                    "pipeline batch (several workers would otherwise mix their batches into one)"
                )
            if self.persistent_workers:
                raise ValueError(
                    "persistent workers keep their own copy of the dataset, so a new epoch or a loaded "
                    "state would not reach them; use persistent_workers=False"
                )
            self._per_batch = (batch[0] if batch is not None else 1) * (self.batch_size or 1)
        else:
            raise TypeError(
                "ResumableLoader needs a StreamingTarDataset, or a dataset with sampler=ShardAwareSampler(...)"
            )
        self._running: Optional[Dict[str, int]] = None

    @property
    def epoch(self) -> int:
        return self._target.epoch

    def set_epoch(self, epoch: int) -> None:
        self._target.set_epoch(epoch)
        self._running = None

    def __iter__(self) -> Iterator[Any]:
        target = self._target
        if isinstance(target, StreamingTarDataset):
            target._source.topology.current()  # workers fork from here: give them today's rank
        running = self._running = {"epoch": target.epoch, "start": target.start, "consumed": 0}
        for batch in super().__iter__():
            running["consumed"] += self._per_batch
            yield batch
        self._running = None
        target.set_epoch(running["epoch"] + 1)

    def state_dict(self) -> Dict[str, Any]:
        """The state after the batches handed out so far in this epoch."""
        running = self._running
        if running is None:
            return self._target.state_for(self._target.epoch, self._target.start, 0)
        return self._target.state_for(running["epoch"], running["start"], running["consumed"])

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._target.load_state_dict(state)
        self._running = None
