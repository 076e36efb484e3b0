"""IndexedTarDataset: map-style random access to the samples of tar shards.

``ds[i]`` is a lookup in memory-mapped index arrays plus one ``os.pread``
covering all members of sample ``i`` (one per member in samples over 16 kB):
no tar parsing per item.
Scalar lookups go through ``memoryview`` objects over the index arrays,
which return plain ints several times faster than numpy scalar indexing.

The index arrays are memory-mapped (packed datasets) or plain numpy arrays
(tars indexed on the fly), never per-sample Python objects, so DataLoader
workers share them without copy-on-read growth.  File descriptors and maps
are opened lazily in each process; pickling carries only the arguments.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
from torch.utils.data import Dataset

from .decode import DecodeSpec, Decoder
from .errors import ShardError
from .heap import keep_freed_heap
from .shardfiles import ShardFiles, available_memory, pread_exact, read_ahead_wanted, verified_hashes
from .source import SampleIndex, Source, open_index


_SEPARATE_READ = 16384  # samples spanning more than this read each member on its own


def _view(array: np.ndarray) -> memoryview:
    """A memoryview whose items are Python ints (works on memmaps too)."""
    return memoryview(np.ascontiguousarray(array))


def _key_text(keys: np.ndarray) -> Tuple[Any, int]:
    """(object whose slices give key bytes, offset of the first key in it).

    For a memory-mapped key array this is an ``mmap`` of the same file, whose
    slices are ``bytes``: about 250 ns a key cheaper than slicing a
    ``memoryview``, and shared between processes just the same.  Otherwise
    (arrays built in memory) a memoryview.
    """
    if isinstance(keys, np.memmap) and keys.filename and keys.nbytes:
        try:
            with open(keys.filename, "rb") as f:
                text = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            pass
        else:
            base = keys.offset
            head = min(64, keys.nbytes)
            if len(text) - base == keys.nbytes and text[base : base + head] == keys[:head].tobytes():
                return text, base
            text.close()
    return memoryview(np.ascontiguousarray(keys)), 0


class IndexedTarDataset(Dataset):
    """Random access to the samples of a packed dataset or of any tar shards.

    Parameters
    ----------
    source:
        A dataset directory made by ``python -m packer build``, or tar files:
        a path, a list, a glob or a brace pattern.  Tars without a packed
        index are indexed once (headers only) and the index is cached.
    decode:
        ``None`` or ``"raw"`` (raw bytes), ``"default"``/``"rgb"``/``"pil"``/
        ``"l"`` (decode by extension, images as RGB, stored mode or
        grayscale; see :mod:`loaders.decode`), a dict ``{ext: fn(bytes)}``,
        or a function ``sample -> sample``.
    transform:
        Applied last to the (decoded) sample dict.
    cache_dir:
        Where tar indexes are cached when the tars' directory is read-only.
    verify:
        Hash every shard at its first use in each process and compare it
        with the SHA-256 the packer recorded (packed datasets only): a
        flipped byte becomes a ShardError instead of a wrong sample.  Costs
        one full read of each shard per process.
    read_ahead:
        When this process first opens a shard, ask the kernel to read the
        whole shard into the page cache in the background
        (``posix_fadvise(WILLNEED)``).  On a cold disk, the first epoch of
        random access then costs about one sequential read per shard
        instead of one random read per sample (a cold pass over 1 kB
        samples ran 4.8x faster, ``scripts/check_read_ahead.py``).  On a
        dataset much larger than memory it would evict as much as it
        brings in, so ``"auto"`` (the default) reads ahead only when all
        shards take at most half of the memory available when the dataset
        is opened; ``True`` or ``False`` decide for it.

    ``ds[i]`` returns ``{"__key__": key, "__url__": shard path,
    "__index__": i, "<ext>": value, ...}``.
    """

    def __init__(
        self,
        source: Source,
        decode: DecodeSpec = None,
        transform: Optional[Callable[[Dict[str, Any]], Any]] = None,
        cache_dir: Optional[os.PathLike | str] = None,
        verify: bool = False,
        read_ahead: Union[bool, str] = "auto",
    ) -> None:
        self.source = source
        self.decode = decode
        self.transform = transform
        self.cache_dir = cache_dir
        self.verify = verify
        self.read_ahead = read_ahead
        read_ahead_wanted(read_ahead, 0, None)  # a bad value fails here, not in a worker
        self._decoder = Decoder(decode)
        self._open()

    # ------------------------------------------------------------ lifecycle

    @property
    def index(self) -> SampleIndex:
        """The sample index (opened on first use in this process)."""
        if self._length is None:
            self._open()
        return self._index

    def _open(self) -> None:
        index = open_index(self.source, self.cache_dir)
        self._index: SampleIndex = index
        self._length = index.num_samples
        self._shard_of = _view(index.sample_shard)
        self._members = _view(index.sample_members)
        self._ext = _view(index.member_ext)
        self._offset = _view(index.member_offset)
        self._size = _view(index.member_size)
        self._key_offsets = _view(index.key_offsets)
        self._keys, self._keys_base = _key_text(index.keys)
        self._extensions: List[str] = list(index.extensions)
        self._paths: List[str] = list(index.shard_paths)
        keep_freed_heap()
        self._files = ShardFiles(self._paths, index.shard_bytes, verified_hashes(index, self.verify),
                                 read_ahead_wanted(self.read_ahead, sum(index.shard_bytes), available_memory()))
        self._fds = self._files.open_fds

    def __getstate__(self) -> Dict[str, Any]:
        # Only the arguments travel: every process reopens the index itself.
        return {"source": self.source, "decode": self.decode, "transform": self.transform, "cache_dir": self.cache_dir,
                "verify": self.verify, "read_ahead": self.read_ahead}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._decoder = Decoder(self.decode)
        self._length = None  # opened on first use in this process

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the shard descriptors this process opened (a forked worker
        leaves the ones it inherited to their owner) and the map of the key
        file; the next access reopens what it needs."""
        files = self.__dict__.get("_files")
        if files is not None:
            files.close()
        keys = self.__dict__.get("_keys")
        if isinstance(keys, mmap.mmap):
            keys.close()
            self._length = None  # reopen the index (and the map) on next use

    # -------------------------------------------------------------- access

    def __len__(self) -> int:
        if self._length is None:
            self._open()
        return self._length

    def __getitem__(self, i: int) -> Any:
        n = self._length
        if n is None:
            self._open()
            n = self._length
        # _checked_index, inline for plain ints: this runs once per sample.
        if type(i) is not int or not -n <= i < n:
            i = self._checked_index(i)
        elif i < 0:
            i += n
        sample = self.raw_sample(i)
        if self._decoder.active:
            sample = self._decoder(sample)
        return self.transform(sample) if self.transform is not None else sample

    def __getitems__(self, indices: List[int]) -> List[Any]:
        """A batch at once: what DataLoader calls when it can, saving a
        Python call per sample."""
        if self._length is None:
            self._open()
        samples = self._raw_batch(indices)
        if self._decoder.active:
            samples = [self._decoder(s) for s in samples]
        if self.transform is not None:
            samples = [self.transform(s) for s in samples]
        return samples

    def _raw_batch(self, indices: List[int]) -> List[Dict[str, Any]]:
        """``[raw_sample(i) for i in indices]``, with the index lookups of
        the whole batch done by numpy, so that the loop left in Python does
        little but read (25% faster per sample on 1 kB files, about 10% on
        a 40 kB JPEG with its JSON).  Anything but in-range ints goes the
        per-sample way, which raises the same errors as ``dataset[i]``."""
        n = self._length
        raw, check = self.raw_sample, self._checked_index
        if len(indices) < 8 or not all(type(i) is int for i in indices):
            return [raw(i if type(i) is int and 0 <= i < n else check(i)) for i in indices]
        try:
            wanted = np.array(indices, dtype=np.int64)
        except OverflowError:
            return [raw(check(i)) for i in indices]
        wanted[wanted < 0] += n
        if wanted.min() < 0 or wanted.max() >= n:
            return [raw(check(i)) for i in indices]
        index = self._index
        sample_members = np.asarray(index.sample_members)
        first = sample_members[wanted].astype(np.int64)
        counts = sample_members[wanted + 1].astype(np.int64) - first
        if counts.max() == 1:
            member = first
        else:  # all members of the batch in one flat list, sample after sample
            starts = np.cumsum(counts) - counts
            member = np.arange(int(counts.sum())) + np.repeat(first - starts, counts)
        offsets = np.asarray(index.member_offset)[member]
        sizes = np.asarray(index.member_size)[member]
        extensions = self._extensions
        names = [extensions[e] for e in np.asarray(index.member_ext)[member].tolist()]
        key_offsets = np.asarray(index.key_offsets)
        key_starts = (key_offsets[wanted] + self._keys_base).tolist()
        key_ends = (key_offsets[wanted + 1] + self._keys_base).tolist()
        shards = np.asarray(index.sample_shard)[wanted].tolist()
        fds, keys, paths, pread = self._fds, self._keys, self._paths, os.pread
        samples: List[Dict[str, Any]] = []
        if member is first:  # one file per sample, the common case: the leanest loop
            offset_list, size_list = offsets.tolist(), sizes.tolist()
            for j, i in enumerate(wanted.tolist()):
                shard = shards[j]
                fd = fds.get(shard)
                if fd is None:
                    fd = self._files.fd(shard, i)
                offset, size = offset_list[j], size_list[j]
                data = pread(fd, size, offset)
                if len(data) != size:
                    data = self._rest_of_read(shard, i, offset, offset + size, data)
                samples.append({
                    "__key__": str(keys[key_starts[j] : key_ends[j]], "utf-8", "surrogateescape"),
                    "__url__": paths[shard],
                    "__index__": i,
                    names[j]: data,
                })
            return samples
        ends = offsets + sizes
        # Several small members are read with one pread, as raw_sample does.
        joint = ((counts > 1) & (ends[starts + counts - 1] - offsets[starts] < _SEPARATE_READ)).tolist()
        offset_list, end_list = offsets.tolist(), ends.tolist()
        m = 0
        for j, (i, count) in enumerate(zip(wanted.tolist(), counts.tolist())):
            shard = shards[j]
            fd = fds.get(shard)
            if fd is None:
                fd = self._files.fd(shard, i)
            sample = {
                "__key__": str(keys[key_starts[j] : key_ends[j]], "utf-8", "surrogateescape"),
                "__url__": paths[shard],
                "__index__": i,
            }
            if joint[j]:
                start, end = offset_list[m], end_list[m + count - 1]
                data = pread(fd, end - start, start)
                if len(data) != end - start:
                    data = self._rest_of_read(shard, i, start, end, data)
                for k in range(m, m + count):
                    sample[names[k]] = data[offset_list[k] - start : end_list[k] - start]
            else:
                for k in range(m, m + count):
                    start, end = offset_list[k], end_list[k]
                    data = pread(fd, end - start, start)
                    if len(data) != end - start:
                        data = self._rest_of_read(shard, i, start, end, data)
                    sample[names[k]] = data
            samples.append(sample)
            m += count
        return samples

    def _checked_index(self, i: Any) -> int:
        n = self._length
        try:
            i = i.__index__()
        except AttributeError:
            raise TypeError(f"dataset indices must be integers, not {type(i).__name__}") from None
        if not -n <= i < n:
            raise IndexError(f"sample index {i} out of range (dataset has {n} samples)")
        return i + n if i < 0 else i

    def raw_sample(self, i: int) -> Dict[str, Any]:
        """Sample ``i`` (0 <= i < len) as undecoded bytes.

        One read covers the whole sample when it is small; in a larger
        sample each member is read on its own, straight into the bytes object
        returned, rather than read and then copied out of a larger buffer.
        """
        members = self._members
        lo, hi = members[i], members[i + 1]
        offset, size = self._offset, self._size
        shard = self._shard_of[i]
        # Descriptors inherited by a forked worker stay valid: pread ignores
        # the shared file position, so no per-item fork check is needed.
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._files.fd(shard, i)
        key_offsets, base = self._key_offsets, self._keys_base
        sample: Dict[str, Any] = {
            "__key__": str(self._keys[base + key_offsets[i] : base + key_offsets[i + 1]], "utf-8", "surrogateescape"),
            "__url__": self._paths[shard],
            "__index__": i,
        }
        extensions, ext = self._extensions, self._ext
        if hi - lo == 1:
            data = os.pread(fd, size[lo], offset[lo])
            if len(data) != size[lo]:
                data = self._rest_of_read(shard, i, offset[lo], offset[lo] + size[lo], data)
            sample[extensions[ext[lo]]] = data
            return sample
        if offset[hi - 1] + size[hi - 1] - offset[lo] >= _SEPARATE_READ:
            for m in range(lo, hi):
                data = os.pread(fd, size[m], offset[m])
                if len(data) != size[m]:
                    data = self._rest_of_read(shard, i, offset[m], offset[m] + size[m], data)
                sample[extensions[ext[m]]] = data
            return sample
        start = offset[lo]
        end = offset[hi - 1] + size[hi - 1]
        data = os.pread(fd, end - start, start)
        if len(data) != end - start:
            data = self._rest_of_read(shard, i, start, end, data)
        for m in range(lo, hi):
            rel = offset[m] - start
            sample[extensions[ext[m]]] = data[rel : rel + size[m]]
        return sample

    def _rest_of_read(self, shard: int, i: int, start: int, end: int, got: bytes) -> bytes:
        """A short read is the end of the shard, or a read over the ~2 GiB
        that one ``pread`` returns: read the rest, or name the shard."""
        data = pread_exact(self._files.fd(shard, i), end - start, start) if got else got
        if len(data) == end - start:
            return data
        raise ShardError(
            f"{self._paths[shard]}: shard ends before sample {i} (wanted bytes {start}..{end}, got {len(data)} bytes)"
        )
