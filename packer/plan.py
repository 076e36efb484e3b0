"""Pure planning: which sample goes to which shard.

Everything here is arithmetic on numpy arrays (no files), so it is tested
directly and runs in well under a second for millions of samples.

Balance is by real archive bytes (tar headers, PAX records and padding
included).  Cutting the shuffled order into contiguous runs is not enough:
with ~50 samples a shard and a few large samples, one large sample at a cut
moves a shard by 10 % or more.  Samples are instead dealt out largest first
to the lightest shard (:func:`assign_balanced`), then each shard keeps its
samples in shuffled order.  Only when the order itself must be kept
(``--no-shuffle``) are shards contiguous runs (:func:`split_contiguous`).
"""

from __future__ import annotations

import heapq
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


_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = np.uint64(0x100000001B3)
_MASK64 = (1 << 64) - 1


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: spreads every input bit over the whole word."""
    z = values.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def key_hashes(keys: np.ndarray, key_offsets: np.ndarray, seed: int) -> np.ndarray:
    """A 64-bit hash of every key, keyed by ``seed``.

    FNV-1a over the key bytes (started from a seed-dependent state) and a
    SplitMix64 finalizer, computed one byte position at a time across all
    keys at once, so a million keys take milliseconds.  Integer arithmetic
    modulo 2**64 only: the same keys and seed give the same hashes on any
    platform and numpy version.
    """
    n = len(key_offsets) - 1
    starts = np.asarray(key_offsets[:-1], dtype=np.int64)
    lengths = np.diff(np.asarray(key_offsets, dtype=np.int64))
    by_length = np.argsort(-lengths, kind="stable")
    starts, lengths = starts[by_length], lengths[by_length]
    seed_state = _mix64(np.array([int(seed) & _MASK64], dtype=np.uint64))[0]
    state = np.full(n, np.uint64(_FNV_OFFSET) ^ seed_state, dtype=np.uint64)
    longest = int(lengths[0]) if n else 0
    active = np.searchsorted(-lengths, -np.arange(longest), side="left")  # keys longer than p
    data = np.asarray(keys, dtype=np.uint8)
    for p in range(longest):
        k = int(active[p])
        state[:k] ^= data[starts[:k] + p].astype(np.uint64)
        state[:k] *= _FNV_PRIME
    hashes = np.empty(n, dtype=np.uint64)
    hashes[by_length] = _mix64(state)
    return hashes


def shuffle_order(keys: np.ndarray, key_offsets: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the samples fixed by their keys and ``seed`` alone.

    Samples are sorted by :func:`key_hashes`, so the order does not depend on
    the numpy version or the scan's worker count, and adding a file moves
    only that sample rather than reshuffling everything.  Ties (about one in
    2**64 pairs) keep scan order.
    """
    return np.argsort(key_hashes(keys, key_offsets, seed), kind="stable")


def assign_balanced(sizes: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard of each sample so that shard byte totals are nearly equal.

    Largest-first greedy (LPT): samples are taken in decreasing size (ties
    in the given, shuffled order) and each goes to the currently lightest
    shard.  A shard that drew a few large samples simply receives fewer
    small ones later, so the final spread is about the size of the smallest
    samples.  Every sample has a positive size (a tar header at least), so
    the first ``num_shards`` samples land in distinct shards and none is
    empty.  About a microsecond per sample; the heap holds plain integers
    ``load * num_shards + shard`` so ties break by shard number.
    """
    n = len(sizes)
    if not 1 <= num_shards <= max(n, 1):
        raise ValueError(f"cannot make {num_shards} non-empty shards from {n} samples")
    sizes = np.asarray(sizes, dtype=np.int64)
    if n and sizes.min() <= 0:
        raise ValueError("sample sizes must be positive")
    by_size = np.argsort(-sizes, kind="stable")
    heap = list(range(num_shards))
    assigned = [0] * n
    replace = heapq.heapreplace
    for i, size in enumerate(sizes[by_size].tolist()):
        top = heap[0]
        assigned[i] = top % num_shards
        replace(heap, top + size * num_shards)
    shard_of = np.empty(n, dtype=np.int64)
    shard_of[by_size] = assigned
    return shard_of


def split_contiguous(sizes: np.ndarray, num_shards: int) -> np.ndarray:
    """Cut ``sizes`` (in order) into ``num_shards`` contiguous, non-empty runs
    of nearly equal byte totals; returns the ``num_shards + 1`` boundaries.

    Used when the order must be kept (``--no-shuffle``): each cut lands on the
    sample boundary nearest to ``k * total / num_shards`` (absolute targets,
    so errors do not accumulate), so a shard is within about one sample of
    the mean at each end.
    """
    n = len(sizes)
    if not 1 <= num_shards <= max(n, 1):
        raise ValueError(f"cannot make {num_shards} non-empty shards from {n} samples")
    csum = np.zeros(n + 1, dtype=np.float64)
    np.cumsum(sizes, out=csum[1:])
    targets = csum[-1] * np.arange(1, num_shards) / num_shards
    right = np.searchsorted(csum, targets, side="left").clip(1, n)
    left = right - 1
    nearer_left = (targets - csum[left]) <= (csum[right] - targets)
    bounds = np.empty(num_shards + 1, dtype=np.int64)
    bounds[0], bounds[-1] = 0, n
    bounds[1:-1] = np.where(nearer_left, left, right)
    for k in range(1, num_shards):  # keep every shard non-empty
        bounds[k] = min(max(bounds[k], bounds[k - 1] + 1), n - (num_shards - k))
    return bounds


def _cut(sizes: np.ndarray, num_shards: int, keep_order: bool):
    """Positions (into ``sizes``) regrouped by shard, and shard boundaries."""
    if keep_order:
        return np.arange(len(sizes)), split_contiguous(sizes, num_shards)
    return _group(np.arange(len(sizes)), assign_balanced(sizes, num_shards), num_shards)


def _fit(sizes: np.ndarray, budget: int, keep_order: bool):
    """The fewest shards, from ``ceil(total / budget)`` up, whose largest
    fits ``budget`` (every sample must fit alone); positions and bounds."""
    count = max(1, -(-int(sizes.sum()) // budget))
    while True:
        positions, bounds = _cut(sizes, count, keep_order)
        csum = np.zeros(len(sizes) + 1, dtype=np.uint64)
        np.cumsum(sizes[positions], out=csum[1:])
        if int(np.diff(csum[bounds]).max()) <= budget or count >= len(sizes):
            return positions, bounds
        count = min(len(sizes), count + max(1, count // 64))


def _group(order: np.ndarray, shard_of: np.ndarray, num_shards: int):
    """Order by shard, keeping the given order within each shard."""
    regrouped = np.argsort(shard_of, kind="stable")
    bounds = np.zeros(num_shards + 1, dtype=np.int64)
    np.cumsum(np.bincount(shard_of, minlength=num_shards), out=bounds[1:])
    return order[regrouped], bounds


def plan_shards(
    sample_bytes: np.ndarray,
    order: np.ndarray,
    *,
    shard_size: Optional[int] = None,
    num_shards: Optional[int] = None,
    keep_order: bool = False,
) -> ShardPlan:
    """Assign samples (taken in ``order``) to size-balanced shards.

    With ``shard_size`` the number of shards is the smallest that keeps every
    shard at or under ``shard_size`` bytes; a sample that alone exceeds it
    gets a shard of its own (listed in ``oversized``; placed last, or where
    it stands with ``keep_order``).  With ``num_shards`` exactly that many
    shards are made.  ``keep_order`` makes shards contiguous runs of
    ``order`` (so reading shards in turn gives ``order`` back) at the cost
    of looser balance.
    """
    if (shard_size is None) == (num_shards is None):
        raise ValueError("give exactly one of shard_size and num_shards")
    order = np.asarray(order, dtype=np.int64)
    if len(order) == 0:
        raise ValueError("no samples to plan")
    sizes = np.asarray(sample_bytes, dtype=np.uint64)[order]
    if num_shards is not None:
        positions, bounds = _cut(sizes, num_shards, keep_order)
        return ShardPlan(order=order[positions], bounds=bounds)
    budget = int(shard_size) - ARCHIVE_TRAILER
    if budget <= 0:
        raise ValueError(f"shard size {shard_size} is smaller than a tar's end-of-archive blocks")
    big = np.flatnonzero(sizes > budget)
    if keep_order:
        # Oversized samples stay where they are, each alone, so that reading
        # the shards in turn still gives ``order`` back.
        pieces, bounds, oversized = [], [0], []
        start = 0
        for stop in big.tolist() + [len(order)]:
            if stop > start:
                positions, run_bounds = _fit(sizes[start:stop], budget, True)
                pieces.append(positions + start)
                bounds.extend((run_bounds[1:] + start).tolist())
            if stop < len(order):
                oversized.append(len(bounds) - 1)
                pieces.append(np.array([stop]))
                bounds.append(stop + 1)
            start = stop + 1
        return ShardPlan(order=order[np.concatenate(pieces)], bounds=np.array(bounds, dtype=np.int64), oversized=oversized)
    small = np.ones(len(order), dtype=bool)
    small[big] = False
    small_positions = np.flatnonzero(small)
    bounds = np.zeros(1, dtype=np.int64)
    grouped = np.zeros(0, dtype=np.int64)
    if len(small_positions):
        positions, bounds = _fit(sizes[small_positions], budget, False)
        grouped = small_positions[positions]
    first_big = len(bounds) - 1
    bounds = np.concatenate([bounds, len(grouped) + 1 + np.arange(len(big), dtype=np.int64)])
    return ShardPlan(
        order=order[np.concatenate([grouped, big])],
        bounds=bounds,
        oversized=list(range(first_big, first_big + len(big))),
    )
