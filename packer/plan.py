"""Pure planning: which sample goes to which shard.

Everything here is arithmetic on numpy arrays (no files), so it is tested
directly and runs in well under a second for millions of samples.

Balance is by real archive bytes (tar headers, PAX records and padding
included).  Samples are cut into contiguous runs of the (shuffled) order,
with each boundary placed at the sample boundary nearest to ``k * total / n``;
boundaries are absolute targets, so rounding errors do not accumulate and a
shard differs from the mean by at most about one sample at each end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .tarfmt import END_OF_ARCHIVE

ARCHIVE_TRAILER = len(END_OF_ARCHIVE)
DEFAULT_SEED = 0


@dataclass(frozen=True)
class ShardPlan:
    """Output order of samples and where each shard starts in it.

    ``order[bounds[j]:bounds[j + 1]]`` are the (input) sample ids of shard
    ``j`` in archive order.  ``oversized`` lists shards that hold one sample
    larger than the target shard size.
    """

    order: np.ndarray
    bounds: np.ndarray
    oversized: List[int] = field(default_factory=list)

    @property
    def num_shards(self) -> int:
        return len(self.bounds) - 1

    def shard_bytes(self, sample_bytes: np.ndarray) -> np.ndarray:
        """Size of each shard file in bytes (end-of-archive blocks included)."""
        csum = np.zeros(len(self.order) + 1, dtype=np.uint64)
        np.cumsum(sample_bytes[self.order], out=csum[1:])
        return np.diff(csum[self.bounds]) + np.uint64(ARCHIVE_TRAILER)


def shuffle_order(keys: np.ndarray, key_offsets: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the samples fixed by their keys and ``seed`` alone.

    Each key is hashed (BLAKE2b keyed by the seed) and samples are sorted by
    hash, so the order does not depend on the numpy version, and adding a
    file moves only that sample rather than reshuffling everything.
    """
    seed_bytes = int(seed).to_bytes(16, "little", signed=True)
    n = len(key_offsets) - 1
    hashes = np.empty(n, dtype=np.uint64)
    blob = keys.tobytes()
    offsets = key_offsets.tolist()
    for i in range(n):
        digest = hashlib.blake2b(blob[offsets[i] : offsets[i + 1]], digest_size=8, key=seed_bytes).digest()
        hashes[i] = int.from_bytes(digest, "little")
    # Ties (astronomically rare) fall back to scan order: the sort is stable.
    return np.argsort(hashes, kind="stable")


def split_balanced(sizes: np.ndarray, num_shards: int) -> np.ndarray:
    """Cut ``sizes`` (in order) into ``num_shards`` contiguous, non-empty runs
    of nearly equal byte totals; returns the ``num_shards + 1`` boundaries."""
    n = len(sizes)
    if not 1 <= num_shards <= max(n, 1):
        raise ValueError(f"cannot cut {n} samples into {num_shards} non-empty shards")
    csum = np.zeros(n + 1, dtype=np.float64)
    np.cumsum(sizes, out=csum[1:])
    targets = csum[-1] * np.arange(1, num_shards) / num_shards
    right = np.searchsorted(csum, targets, side="left").clip(1, n)
    left = right - 1
    nearer_left = (targets - csum[left]) <= (csum[right] - targets)
    cuts = np.where(nearer_left, left, right)
    bounds = np.empty(num_shards + 1, dtype=np.int64)
    bounds[0], bounds[-1] = 0, n
    bounds[1:-1] = cuts
    # Keep every shard non-empty: each cut at least one past the previous one,
    # and leave room for the shards after it.
    for k in range(1, num_shards):
        bounds[k] = min(max(bounds[k], bounds[k - 1] + 1), n - (num_shards - k))
    return bounds


def plan_shards(
    sample_bytes: np.ndarray,
    order: np.ndarray,
    *,
    shard_size: Optional[int] = None,
    num_shards: Optional[int] = None,
) -> ShardPlan:
    """Assign samples (taken in ``order``) to size-balanced shards.

    With ``shard_size`` the number of shards is the smallest that keeps every
    shard at or under ``shard_size`` bytes; a sample that alone exceeds it
    gets a shard of its own (listed in ``oversized``, placed last).  With
    ``num_shards`` exactly that many shards are made.
    """
    if (shard_size is None) == (num_shards is None):
        raise ValueError("give exactly one of shard_size and num_shards")
    order = np.asarray(order, dtype=np.int64)
    if len(order) == 0:
        raise ValueError("no samples to plan")
    sizes = np.asarray(sample_bytes, dtype=np.uint64)[order]
    if num_shards is not None:
        return ShardPlan(order=order, bounds=split_balanced(sizes, num_shards))
    budget = int(shard_size) - ARCHIVE_TRAILER
    if budget <= 0:
        raise ValueError(f"shard size {shard_size} is smaller than a tar's end-of-archive blocks")
    big = sizes > budget
    small_order, big_order = order[~big], order[big]
    bounds = np.zeros(1, dtype=np.int64)
    if len(small_order):
        total = int(sizes[~big].sum())
        count = max(1, -(-total // budget))
        bounds = split_balanced(sizes[~big], count)
    first_big = len(bounds) - 1
    bounds = np.concatenate([bounds, len(small_order) + 1 + np.arange(len(big_order), dtype=np.int64)])
    return ShardPlan(
        order=np.concatenate([small_order, big_order]),
        bounds=bounds,
        oversized=list(range(first_big, first_big + len(big_order))),
    )
