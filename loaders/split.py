"""Who reads which positions of an epoch: pure arithmetic, no I/O, no torch.

An epoch is positions ``0 .. n-1`` of one global order (:mod:`loaders.order`
for streaming, the sampler's order for random access).  The job consumes it
in **global batches** of ``world_size x batch_size`` consecutive positions
(``batch_size`` is the per-rank batch, the ``unit`` here): rank ``r`` takes
the ``r``-th slice of ``batch_size`` positions of every global batch, and
its DataLoader workers take its batches in turn (worker ``w`` of ``k`` takes
the rank's batches ``w, w + k, ...``), which is the order in which a
DataLoader hands batches to the training loop.  Hence the sequence of
samples the whole job consumes, global batch after global batch, is the
epoch's order itself, whatever the number of ranks and workers, as long as
the global batch size is the same; and the samples consumed after ``s``
global batches are exactly positions ``0 .. s x global_batch - 1``, so
resuming is starting the deal at that position (``start``), with any shape.

Equal counts: after the full global batches, the ``tail`` positions that are
left are shared equally by the ranks, each taking ``ceil(tail / world)``
(pad, the default: positions past the end wrap around to the start of the
epoch, so fewer than ``world_size`` extra samples are read and none is missed)
or ``floor(tail / world)`` (``drop_last``: up to ``world_size - 1`` are not
seen, none twice).  Every rank therefore yields the same number of samples
and batches, so no DDP rank waits for a batch another rank never makes, and
one shard on 8 ranks x 4 workers keeps all 32 busy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Tuple

import numpy as np


@dataclass(frozen=True)
class Deal:
    """Positions ``start .. end-1`` of an epoch dealt to ranks and workers.

    ``end`` may exceed ``num_samples`` when padding: position ``p`` then
    stands for position ``p % num_samples``.
    """

    num_samples: int
    world_size: int
    unit: int = 1
    drop_last: bool = False
    start: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world size must be at least 1, not {self.world_size}")
        if self.unit < 1:
            raise ValueError(f"batch size must be at least 1, not {self.unit}")
        if not 0 <= self.start <= max(self.num_samples, 0):
            raise ValueError(f"start position {self.start} is outside 0..{self.num_samples}")

    @property
    def step(self) -> int:
        """Positions per global batch."""
        return self.world_size * self.unit

    @property
    def full_steps(self) -> int:
        return (self.num_samples - self.start) // self.step

    @property
    def tail_per_rank(self) -> int:
        """Positions each rank takes from what is left after the full steps."""
        tail = self.num_samples - self.start - self.full_steps * self.step
        return tail // self.world_size if self.drop_last else -(-tail // self.world_size)

    @property
    def end(self) -> int:
        return self.start + self.full_steps * self.step + self.world_size * self.tail_per_rank

    @property
    def rank_share(self) -> int:
        """Samples every rank reads."""
        return self.full_steps * self.unit + self.tail_per_rank

    def rank_batches(self, partial: bool = True) -> int:
        """Batches of ``unit`` every rank makes (the last may be partial)."""
        tail = self.tail_per_rank
        return self.full_steps + (1 if tail and (partial or tail == self.unit) else 0)

    def position_after(self, consumed: int) -> int:
        """The first position not yet consumed once every rank has consumed
        ``consumed`` samples of its share.

        Only whole batches map to a prefix of the epoch; ``consumed`` must be
        a multiple of the batch size (or the whole share, which gives at least
        ``num_samples``: the epoch is done, whatever was padded or dropped).
        """
        if consumed >= self.rank_share:
            return max(self.end, self.num_samples)
        steps, partial = divmod(consumed, self.unit)
        if consumed < 0 or partial:
            raise ValueError(f"{consumed} samples per rank is not a whole number of batches of {self.unit}")
        return self.start + steps * self.step

    def owner(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(rank, rank's batch number) of each position in ``start .. end-1``."""
        q = np.asarray(positions, dtype=np.int64) - self.start
        full = self.full_steps * self.step
        in_full = q < full
        tail = max(self.tail_per_rank, 1)
        rank = np.where(in_full, (q % self.step) // self.unit, (q - full) // tail)
        batch = np.where(in_full, q // self.step, self.full_steps)
        return rank, batch

    def worker_positions(self, first: int, stop: int, rank: int, worker: int, num_workers: int) -> np.ndarray:
        """The positions in ``first .. stop-1`` that ``worker`` of ``rank`` reads,
        in the order it yields them."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is not within world size {self.world_size}")
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} is not within {num_workers} workers")
        first, stop = max(first, self.start), min(stop, self.end)
        if stop <= first:
            return np.zeros(0, np.int64)
        positions = np.arange(first, stop, dtype=np.int64)
        owner_rank, batch = self.owner(positions)
        return positions[(owner_rank == rank) & (batch % num_workers == worker)]

    def batch_spans(self, rank: int) -> List[Tuple[int, int]]:
        """Rank ``rank``'s batches as position ranges (for tests and tools;
        readers use :meth:`worker_positions`)."""
        firsts = (self.start + g * self.step + rank * self.unit for g in range(self.full_steps))
        spans = [(a, a + self.unit) for a in firsts]
        if self.tail_per_rank:
            a = self.start + self.full_steps * self.step + rank * self.tail_per_rank
            spans.append((a, a + self.tail_per_rank))
        return spans


def dealt_samples(deal: Deal, order, rank: int, worker: int, num_workers: int) -> Iterator[np.ndarray]:
    """The sample numbers ``worker`` of ``rank`` reads, in order, one array per
    window of ``order`` (a :class:`loaders.order.EpochOrder`), then the
    padding, whose positions past the end stand for the epoch's first ones."""
    n = deal.num_samples
    for first, stop in order.windows_between(deal.start, min(deal.end, n)):
        positions = deal.worker_positions(first, stop, rank, worker, num_workers)
        if len(positions):
            yield order.at(positions)
    if deal.end > n:
        positions = deal.worker_positions(n, deal.end, rank, worker, num_workers)
        if len(positions):
            yield order.at(positions % n)


def wrap(start: int, stop: int, num_samples: int) -> List[Tuple[int, int]]:
    """``[start, stop)`` as ranges of real positions ``[0, num_samples)``:
    positions past the end continue from the start (padding)."""
    if stop <= start:
        return []
    if num_samples <= 0:
        raise ValueError("cannot pad an epoch that has no samples")
    ranges: List[Tuple[int, int]] = []
    while start < stop:
        base = start - start % num_samples
        a = start - base
        b = min(stop - base, num_samples)
        ranges.append((a, b))
        start = base + b
    return ranges


def batches_for(samples: int, batch_size: int, partial: bool) -> int:
    """Batches that ``samples`` samples make."""
    return -(-samples // batch_size) if partial else samples // batch_size
