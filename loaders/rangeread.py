"""Read a batch of samples with a few large positioned reads.

The streaming loader asks for the samples of one window at a time (see
:mod:`loaders.order`), in the order they are to be yielded.  Samples that
lie next to each other in a shard (a chunk) are fetched with one ``pread``
from the first member of the first sample to the end of the last member of
the last one, skipping the header blocks in between; the members are then
cut out of that buffer.  No tar header is parsed: every offset comes from
the index, so reading costs one system call per run of samples plus the
Python work of building each sample dict.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from .shardfiles import ShardFiles
from .source import SampleIndex

#: Needed samples less than this many bytes apart are read in one piece
#: (reading a gap is cheaper than another system call).
MERGE_GAP = 64 * 1024

#: Samples spanning this many bytes or more are read member by member,
#: straight into the bytes objects returned: copying a large member out of a
#: run buffer costs more than the system call it saves.
SEPARATE_READ = 16 * 1024

_SEPARATE = -1  # run number of a sample read member by member
_UNREAD: Any = object()  # buffer of a run not read because reading stopped before it


class StopReading(Exception):
    """Raised by a ``skip_unreadable`` callback to end reading at the error:
    the samples before it (in the order asked for) are still yielded."""


class RangeReader:
    """Turns arrays of sample numbers into sample dicts, reading in runs."""

    def __init__(self, index: SampleIndex, files: ShardFiles) -> None:
        self.index = index
        self.files = files
        self._members = memoryview(np.ascontiguousarray(index.sample_members))
        self._ext = memoryview(np.ascontiguousarray(index.member_ext))
        self._offset = memoryview(np.ascontiguousarray(index.member_offset))
        self._size = memoryview(np.ascontiguousarray(index.member_size))
        self._key_offsets = memoryview(np.ascontiguousarray(index.key_offsets))
        self._keys = memoryview(np.ascontiguousarray(index.keys))
        self._extensions: List[str] = list(index.extensions)
        self._paths: List[str] = list(index.shard_paths)
        self._bad_shards: set = set()  # unusable shards the caller chose to skip

    def _skip(self, exc: BaseException, skip_unreadable: Optional[Callable[[BaseException], bool]]) -> bool:
        """Whether to leave out what failed; a shard that cannot be used at
        all is then skipped without asking again."""
        if skip_unreadable is None or not skip_unreadable(exc):
            return False
        if getattr(exc, "whole_shard", False):
            self._bad_shards.add(exc.shard)
        return True

    def read(self, samples: np.ndarray, skip_unreadable: Optional[Callable[[BaseException], bool]] = None) -> Iterator[Dict[str, Any]]:
        """The samples numbered ``samples``, in that order, as
        ``{"__key__", "__url__", "__index__", "<ext>": bytes}`` dicts.

        A read that fails raises, unless ``skip_unreadable(exc)`` returns
        True: then only the samples of that read are left out (and the rest
        of a shard that cannot be opened).  If it raises StopReading, the
        samples asked for before the failed one are yielded, then it stops.
        """
        if len(samples) == 0:
            return
        index = self.index
        samples = np.asarray(samples, dtype=np.int64)
        by_position = np.argsort(samples, kind="stable")
        ordered = samples[by_position]
        first_member = index.sample_members[ordered].astype(np.int64)
        last_member = index.sample_members[ordered + 1].astype(np.int64) - 1
        starts = index.member_offset[first_member].astype(np.int64)
        ends = index.member_offset[last_member].astype(np.int64) + index.member_size[last_member].astype(np.int64)
        shards = index.sample_shard[ordered].astype(np.int64)
        separate = ends - starts >= SEPARATE_READ
        small = np.flatnonzero(~separate)
        s_shards, s_starts, s_ends = shards[small], starts[small], ends[small]
        new_run = np.ones(len(small), dtype=bool)
        new_run[1:] = (s_shards[1:] != s_shards[:-1]) | (s_starts[1:] - s_ends[:-1] > MERGE_GAP) | (s_starts[1:] < s_ends[:-1])
        run_first = np.flatnonzero(new_run)
        run_end = np.maximum.reduceat(s_ends, run_first) if len(small) else s_ends
        buffers: List[Optional[bytes]] = []
        for shard, start, end, sample in zip(
            s_shards[run_first].tolist(), s_starts[run_first].tolist(), run_end.tolist(), ordered[small][run_first].tolist()
        ):
            if shard in self._bad_shards:
                buffers.append(None)
                continue
            try:
                buffers.append(self.files.read(shard, start, end, sample))
            except StopReading:
                raise
            except Exception as exc:
                try:
                    if not self._skip(exc, skip_unreadable):
                        raise
                except StopReading:
                    buffers.extend([_UNREAD] * (len(run_first) - len(buffers)))
                    break
                buffers.append(None)
        run_of = np.full(len(ordered), _SEPARATE, dtype=np.int64)
        base = np.zeros(len(ordered), dtype=np.int64)
        run_of[small] = np.cumsum(new_run) - 1
        base[small] = s_starts[run_first][run_of[small]]
        # Back to the order asked for.
        yield from self._build(
            samples.tolist(),
            _unsort(run_of, by_position).tolist(),
            _unsort(base, by_position).tolist(),
            buffers,
            _unsort(shards, by_position).tolist(),
            skip_unreadable,
        )

    def _build(self, samples: List[int], runs: List[int], bases: List[int], buffers: List[Optional[bytes]], shards: List[int],
               skip_unreadable: Optional[Callable[[BaseException], bool]]) -> Iterator[Dict[str, Any]]:
        members, ext, offset, size = self._members, self._ext, self._offset, self._size
        key_offsets, keys, extensions, paths = self._key_offsets, self._keys, self._extensions, self._paths
        read = self.files.read
        bad = self._bad_shards
        for i, run, base, shard in zip(samples, runs, bases, shards):
            if run != _SEPARATE:
                buffer = buffers[run]
                if buffer is None:
                    continue
                if buffer is _UNREAD:
                    raise StopReading()
            elif shard in bad:
                continue
            sample: Dict[str, Any] = {
                "__key__": str(keys[key_offsets[i] : key_offsets[i + 1]], "utf-8", "surrogateescape"),
                "__url__": paths[shard],
                "__index__": i,
            }
            if run != _SEPARATE:
                for m in range(members[i], members[i + 1]):
                    rel = offset[m] - base
                    sample[extensions[ext[m]]] = buffer[rel : rel + size[m]]
                yield sample
                continue
            try:
                for m in range(members[i], members[i + 1]):
                    sample[extensions[ext[m]]] = read(shard, offset[m], offset[m] + size[m], i)
            except Exception as exc:
                if not self._skip(exc, skip_unreadable):
                    raise
                continue
            yield sample


def _unsort(values: np.ndarray, by_position: np.ndarray) -> np.ndarray:
    """``values`` (in sorted order) put back in the order before sorting."""
    out = np.empty_like(values)
    out[by_position] = values
    return out
