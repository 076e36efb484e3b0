"""Who reads which positions of an epoch: pure arithmetic, no I/O, no torch.

An epoch is positions ``0 .. n-1`` of an :class:`loaders.order.EpochOrder`.
To give every rank exactly the same number of samples (so that no DDP rank
waits forever for a batch another rank never makes), the positions are
first made a multiple of the world size:

* ``drop_last=False`` (pad, the default): positions continue past ``n-1``
  and wrap around to the start of the epoch's order, so the first up to
  ``world_size - 1`` samples of the epoch are seen twice and none is missed;
* ``drop_last=True``: the last ``n % world_size`` positions are dropped, so
  up to ``world_size - 1`` samples (different ones each epoch, since the
  order changes) are not seen and none twice.

Rank ``r`` then reads the ``r``-th contiguous, equal part (contiguous keeps
each rank on few shards), and a rank's part is cut into contiguous parts for
its DataLoader workers in whole units of ``unit`` positions (the batch size
when the pipeline batches), so that only the last batch of a rank can be
partial and the rank yields ``ceil(share / unit)`` batches whatever the
number of workers.  A part may begin and end inside a shard, so one shard
spread over 8 ranks x 4 workers keeps all 32 busy.
"""

from __future__ import annotations

from typing import List, Tuple


def rank_share(num_samples: int, world_size: int, drop_last: bool) -> int:
    """Samples every rank reads per epoch."""
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, not {world_size}")
    if drop_last:
        return num_samples // world_size
    return -(-num_samples // world_size) if num_samples else 0


def rank_span(num_samples: int, rank: int, world_size: int, drop_last: bool) -> Tuple[int, int]:
    """Positions ``[start, stop)`` of rank ``rank`` (``stop`` may exceed the
    number of samples when padding; see :func:`wrap`)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not within world size {world_size}")
    share = rank_share(num_samples, world_size, drop_last)
    return rank * share, (rank + 1) * share


def worker_span(start: int, stop: int, worker: int, num_workers: int, unit: int = 1) -> Tuple[int, int]:
    """Worker ``worker``'s contiguous part of ``[start, stop)``, cut at
    multiples of ``unit`` from ``start``; parts differ by at most one unit."""
    if not 0 <= worker < num_workers:
        raise ValueError(f"worker {worker} is not within {num_workers} workers")
    if unit < 1:
        raise ValueError(f"unit must be at least 1, not {unit}")
    units = -(-(stop - start) // unit)
    first = start + (worker * units // num_workers) * unit
    last = start + ((worker + 1) * units // num_workers) * unit
    return min(first, stop), min(last, stop)


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
