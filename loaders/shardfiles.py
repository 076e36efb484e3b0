"""Open shard files lazily, once per process, checked against their index.

Both loaders read shards with ``os.pread`` on descriptors kept open for the
life of the dataset.  A descriptor is opened at the first read of a shard in
a process and its size is checked against the size recorded when the shard
was indexed, so a replaced or truncated shard is refused by name before any
byte of it is used.  A forked DataLoader worker may keep using descriptors it
inherited (``pread`` ignores the shared file position) but never closes them:
they belong to the parent.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence

from .errors import ShardError


class ShardFiles:
    """Read-only descriptors of ``paths``, whose sizes must equal ``sizes``."""

    def __init__(self, paths: Sequence[str], sizes: Sequence[int]) -> None:
        self.paths = list(paths)
        self.sizes = list(sizes)
        self._fds: Dict[int, int] = {}
        self._owned: Dict[int, int] = {}  # descriptors this process opened
        self._pid = os.getpid()

    def fd(self, shard: int, sample: int) -> int:
        """Descriptor of shard ``shard``; ``sample`` names what needed it."""
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._open(shard, sample)
        return fd

    def _open(self, shard: int, sample: int) -> int:
        path = self.paths[shard]
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise ShardError(f"{path}: shard missing (needed for sample {sample})") from None
        except OSError as exc:
            raise ShardError(f"{path}: cannot open shard (needed for sample {sample}): {exc.strerror}") from None
        actual = os.fstat(fd).st_size
        if actual != self.sizes[shard]:
            os.close(fd)
            raise ShardError(
                f"{path}: shard is {actual} bytes but its index says {self.sizes[shard]}: "
                f"it changed since it was indexed (needed for sample {sample})"
            )
        if self._pid != os.getpid():  # first descriptor of a forked child
            self._owned, self._pid = {}, os.getpid()
        self._fds[shard] = self._owned[shard] = fd
        return fd

    def read(self, shard: int, start: int, end: int, sample: int) -> bytes:
        """Bytes ``start .. end-1`` of a shard; a short read is a ShardError."""
        data = os.pread(self.fd(shard, sample), end - start, start)
        if len(data) != end - start:
            raise ShardError(
                f"{self.paths[shard]}: shard ends before sample {sample} "
                f"(wanted bytes {start}..{end}, got {len(data)} bytes)"
            )
        return data

    def close(self) -> None:
        """Close the descriptors this process opened."""
        if self._pid == os.getpid():
            for fd in self._owned.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._owned.clear()
        self._fds.clear()
