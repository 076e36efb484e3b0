"""IndexedTarDataset: map-style random access to the samples of tar shards.

``ds[i]`` is one dictionary lookup in memory-mapped index arrays plus one
``os.pread`` covering all members of sample ``i``: no tar parsing per item.
Scalar lookups go through ``memoryview`` objects over the index arrays,
which return plain ints several times faster than numpy scalar indexing.

The index arrays are memory-mapped (packed datasets) or plain numpy arrays
(tars indexed on the fly), never per-sample Python objects, so DataLoader
workers share them without copy-on-read growth.  File descriptors and maps
are opened lazily in each process; pickling carries only the arguments.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from torch.utils.data import Dataset

from .decode import DecodeSpec, Decoder
from .errors import ShardError
from .source import SampleIndex, Source, open_index


def _view(array: np.ndarray) -> memoryview:
    """A memoryview whose items are Python ints (works on memmaps too)."""
    return memoryview(np.ascontiguousarray(array))


class IndexedTarDataset(Dataset):
    """Random access to the samples of a packed dataset or of any tar shards.

    Parameters
    ----------
    source:
        A dataset directory made by ``python -m packer build``, or tar files:
        a path, a list, a glob or a brace pattern.  Tars without a packed
        index are indexed once (headers only) and the index is cached.
    decode:
        ``None`` (raw bytes), ``"default"``/``"rgb"``/``"pil"`` (decode by
        extension, see :mod:`loaders.decode`), a dict ``{ext: fn(bytes)}``,
        or a function ``sample -> sample``.
    transform:
        Applied last to the (decoded) sample dict.
    cache_dir:
        Where tar indexes are cached when the tars' directory is read-only.

    ``ds[i]`` returns ``{"__key__": key, "__url__": shard path,
    "__index__": i, "<ext>": value, ...}``.
    """

    def __init__(
        self,
        source: Source,
        decode: DecodeSpec = None,
        transform: Optional[Callable[[Dict[str, Any]], Any]] = None,
        cache_dir: Optional[os.PathLike | str] = None,
    ) -> None:
        self.source = source
        self.decode = decode
        self.transform = transform
        self.cache_dir = cache_dir
        self._decoder = Decoder(decode)
        self._open()

    # ------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        index = open_index(self.source, self.cache_dir)
        self.index: SampleIndex = index
        self._length = index.num_samples
        self._shard_of = _view(index.sample_shard)
        self._members = _view(index.sample_members)
        self._ext = _view(index.member_ext)
        self._offset = _view(index.member_offset)
        self._size = _view(index.member_size)
        self._key_offsets = _view(index.key_offsets)
        self._keys = _view(index.keys)
        self._extensions: List[str] = list(index.extensions)
        self._paths: List[str] = list(index.shard_paths)
        self._fds: Dict[int, int] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> Dict[str, Any]:
        # Only the arguments travel: every process reopens the index itself.
        return {"source": self.source, "decode": self.decode, "transform": self.transform, "cache_dir": self.cache_dir}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._decoder = Decoder(self.decode)
        self._length = None  # opened on first use in this process

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close this process's shard file descriptors."""
        fds = self.__dict__.get("_fds") or {}
        if self.__dict__.get("_pid") == os.getpid():
            for fd in fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
        fds.clear()

    def _shard_fd(self, shard: int, sample: int) -> int:
        if self._pid != os.getpid():  # forked: descriptors belong to the parent
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            path = self._paths[shard]
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                raise ShardError(f"{path}: shard missing (needed for sample {sample})") from None
            except OSError as exc:
                raise ShardError(f"{path}: cannot open shard (needed for sample {sample}): {exc.strerror}") from None
            actual = os.fstat(fd).st_size
            expected = self.index.shard_bytes[shard]
            if actual != expected:
                os.close(fd)
                raise ShardError(
                    f"{path}: shard is {actual} bytes but its index says {expected}: "
                    f"it changed since it was indexed (needed for sample {sample})"
                )
            self._fds[shard] = fd
        return fd

    # -------------------------------------------------------------- access

    def __len__(self) -> int:
        if self._length is None:
            self._open()
        return self._length

    def __getitem__(self, i: int) -> Any:
        if self._length is None:
            self._open()
        n = self._length
        try:
            i = i.__index__()
        except AttributeError:
            raise TypeError(f"dataset indices must be integers, not {type(i).__name__}") from None
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index out of range (dataset has {n} samples)")
        sample = self.raw_sample(i)
        sample = self._decoder(sample)
        return self.transform(sample) if self.transform is not None else sample

    def raw_sample(self, i: int) -> Dict[str, Any]:
        """Sample ``i`` (0 <= i < len) as undecoded bytes; one read per sample."""
        lo, hi = self._members[i], self._members[i + 1]
        offset, size = self._offset, self._size
        start = offset[lo]
        end = offset[hi - 1] + size[hi - 1]
        shard = self._shard_of[i]
        data = os.pread(self._shard_fd(shard, i), end - start, start)
        if len(data) != end - start:
            raise ShardError(
                f"{self._paths[shard]}: shard ends before sample {i} "
                f"(wanted bytes {start}..{end}, got {len(data)} bytes)"
            )
        sample: Dict[str, Any] = {
            "__key__": bytes(self._keys[self._key_offsets[i] : self._key_offsets[i + 1]]).decode("utf-8", "surrogateescape"),
            "__url__": self._paths[shard],
            "__index__": i,
        }
        extensions, ext = self._extensions, self._ext
        for m in range(lo, hi):
            rel = offset[m] - start
            sample[extensions[ext[m]]] = data[rel : rel + size[m]]
        return sample
