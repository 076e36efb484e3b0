"""The global sample order of one epoch, from (seed, epoch) and the index alone.

Why this shape
--------------
A streaming reader wants long sequential reads; training wants samples well
mixed.  The order here gives both, and depends on nothing but the seed, the
epoch and the number of samples in each shard (never on ranks or workers):

1. Every shard is cut into **chunks** of ``chunk_samples`` consecutive
   samples (the last chunk of a shard may be shorter).  A chunk is read with
   one positioned read.
2. The chunks of all shards are put in a random order drawn from
   ``(seed, epoch)``.
3. Consecutive chunks of that order form **windows**: chunk ``c`` joins
   window ``floor(start_c / window_samples)``, where ``start_c`` is the
   position of its first sample in the chunk order.  A window therefore
   holds about ``window_samples`` samples from several shards.
4. The samples of each window are permuted, from ``(seed, epoch, window)``.

Positions ``0 .. n-1`` of the epoch are the windows one after another.  A
window plays the part of webdataset's shuffle buffer, but its content and
permutation are fixed in advance, so any process can compute the sample at
any position without reading what came before it (splitting and resuming
are arithmetic), and a reader holds at most one window of raw bytes.

With ``shuffle=False`` neither chunks nor windows are permuted: position
``p`` is sample ``p``.

Nothing here does I/O or needs torch.  Windows are permuted lazily, so a
100-million-sample epoch costs one small array per chunk, not per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Tuple

import numpy as np

_STREAM_CHUNKS = 0x43484B53  # "CHKS": distinct random streams per purpose
_STREAM_WINDOW = 0x57494E44  # "WIND"


#: Chunks per window by default: a window mixes about this many stretches of shards.
CHUNKS_PER_WINDOW = 8


def default_chunk_samples(window_samples: int) -> int:
    """The chunk length both loaders use unless told: an eighth of a window."""
    return max(1, window_samples // CHUNKS_PER_WINDOW)


def _rng(seed: int, epoch: int, stream: int, item: int = 0) -> np.random.Generator:
    words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, stream, int(item) & 0xFFFFFFFF, int(item) >> 32]
    return np.random.Generator(np.random.PCG64(words))


def shard_chunks(shard_counts: np.ndarray, chunk_samples: int) -> Tuple[np.ndarray, np.ndarray]:
    """(first sample, length) of every chunk, shard by shard, in stored order.

    Samples are numbered shard by shard, so shard ``j`` holds samples
    ``sum(counts[:j]) ..`` and each chunk is a run of consecutive numbers.
    """
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be at least 1, not {chunk_samples}")
    counts = np.asarray(shard_counts, dtype=np.int64)
    per_shard = -(-counts // chunk_samples)  # chunks in each shard (0 for an empty shard)
    total = int(per_shard.sum())
    shard_of_chunk = np.repeat(np.arange(len(counts)), per_shard)
    first_chunk = np.cumsum(per_shard) - per_shard
    shard_start = np.cumsum(counts) - counts
    within = np.arange(total, dtype=np.int64) - first_chunk[shard_of_chunk]
    starts = shard_start[shard_of_chunk] + within * chunk_samples
    ends = np.minimum(starts + chunk_samples, (shard_start + counts)[shard_of_chunk])
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


@dataclass
class EpochOrder:
    """Positions -> sample numbers for one epoch (see the module docstring).

    ``chunk_start``/``chunk_len`` list the chunks in epoch order;
    ``window_first_chunk`` (length windows + 1) and ``window_start``
    (positions, length windows + 1) delimit the windows.
    """

    num_samples: int
    seed: int
    epoch: int
    shuffle: bool
    chunk_start: np.ndarray
    chunk_len: np.ndarray
    window_first_chunk: np.ndarray
    window_start: np.ndarray
    _last_window: Optional[Tuple[int, np.ndarray]] = field(default=None, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        shard_counts: np.ndarray,
        seed: int,
        epoch: int,
        shuffle: bool = True,
        chunk_samples: int = 128,
        window_samples: int = 1024,
    ) -> "EpochOrder":
        starts, lengths = shard_chunks(shard_counts, chunk_samples)
        n = int(lengths.sum())
        if shuffle and len(starts):
            permutation = _rng(seed, epoch, _STREAM_CHUNKS).permutation(len(starts))
            starts, lengths = starts[permutation], lengths[permutation]
        position = np.cumsum(lengths) - lengths
        window_of_chunk = position // max(int(window_samples), 1)
        # Window ids may skip numbers where a chunk is longer than a window:
        # keep only the windows that have chunks.
        boundaries = np.flatnonzero(np.diff(window_of_chunk, prepend=-1)) if len(starts) else np.zeros(0, np.int64)
        first_chunk = np.append(boundaries, len(starts)).astype(np.int64)
        window_start = np.append(position[boundaries], n).astype(np.int64)
        return cls(n, int(seed), int(epoch), bool(shuffle), starts, lengths, first_chunk, window_start)

    @property
    def num_windows(self) -> int:
        return len(self.window_start) - 1

    def window_samples(self, window: int) -> np.ndarray:
        """Sample numbers of ``window``, in the order they are visited."""
        if self._last_window is not None and self._last_window[0] == window:
            return self._last_window[1]
        lo, hi = self.window_first_chunk[window], self.window_first_chunk[window + 1]
        starts, lengths = self.chunk_start[lo:hi], self.chunk_len[lo:hi]
        if len(starts) == 1:
            samples = np.arange(starts[0], starts[0] + lengths[0], dtype=np.int64)
        else:
            offsets = np.cumsum(lengths) - lengths
            samples = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
        if self.shuffle:
            samples = _rng(self.seed, self.epoch, _STREAM_WINDOW, window).permutation(samples)
        self._last_window = (window, samples)
        return samples

    def windows_between(self, start: int, stop: int) -> Iterator[Tuple[int, int]]:
        """``(first, stop)`` position ranges of the windows overlapping
        ``start .. stop-1``, clipped to it."""
        if start >= stop:
            return
        window = int(np.searchsorted(self.window_start, start, side="right")) - 1
        while start < stop:
            w_stop = int(self.window_start[window + 1])
            yield start, min(stop, w_stop)
            start = w_stop
            window += 1

    def at(self, positions: np.ndarray) -> np.ndarray:
        """Sample numbers at ``positions`` (each in ``0 .. n-1``)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.num_samples):
            raise ValueError(f"positions must lie in 0..{self.num_samples - 1}")
        if not self.shuffle:
            return positions.copy()
        windows = np.searchsorted(self.window_start, positions, side="right") - 1
        out = np.empty_like(positions)
        for window in np.unique(windows).tolist():
            here = windows == window
            out[here] = self.window_samples(window)[positions[here] - self.window_start[window]]
        return out

    def pieces(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """Sample numbers at positions ``start .. stop-1``, one array per
        window touched (so a reader never needs more than one window)."""
        if not 0 <= start <= stop <= self.num_samples:
            raise ValueError(f"positions {start}..{stop} are outside 0..{self.num_samples}")
        if start == stop:
            return
        window = int(np.searchsorted(self.window_start, start, side="right")) - 1
        while start < stop:
            w_start, w_stop = int(self.window_start[window]), int(self.window_start[window + 1])
            take_stop = min(stop, w_stop)
            yield self.window_samples(window)[start - w_start : take_stop - w_start]
            start = take_stop
            window += 1

    def samples(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """All sample numbers at positions ``start .. stop-1`` (for tests and
        small ranges; readers use :meth:`pieces`)."""
        stop = self.num_samples if stop is None else stop
        parts = list(self.pieces(start, stop))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
