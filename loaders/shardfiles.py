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

import hashlib
import os
from typing import Dict, Optional, Sequence, Union

from .errors import ShardError


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``, or fewer only at the end of the file.

    One ``pread`` returns at most about 2 GiB on Linux, so larger ranges
    take several calls.
    """
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, 4 << 20, offset)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        offset += len(chunk)


_READ_AHEAD_STEP = 4 << 20
READ_AHEAD_SHARE = 0.5  # "auto": on when the shards take at most this share of available memory


def available_memory() -> Optional[int]:
    """Bytes of memory the kernel could give without swapping (Linux's
    MemAvailable), else free physical memory, else None."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def read_ahead_wanted(setting: Union[bool, str], total_bytes: int, available: Optional[int]) -> bool:
    """Resolve ``read_ahead``: ``"auto"`` reads ahead only when every shard
    fits in the page cache with room to spare, since on a dataset larger
    than memory whole-shard reads evict each other before they are used."""
    if setting == "auto":
        return available is not None and total_bytes <= available * READ_AHEAD_SHARE
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"read_ahead must be True, False or 'auto', not {setting!r}")


def _read_ahead(fd: int, size: int) -> None:
    """Start reading the whole file into the page cache and return at once.

    One WILLNEED hint covers at most the device's read-ahead limit (8 MiB
    seen on ext4), whatever length it names, so the file is hinted in
    steps; 64 hints for 256 MB took 0.04 s."""
    try:
        for offset in range(0, size, _READ_AHEAD_STEP):
            os.posix_fadvise(fd, offset, min(_READ_AHEAD_STEP, size - offset), os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # only a hint: a file system may not support it


class ShardFiles:
    """Read-only descriptors of ``paths``, whose sizes must equal ``sizes``.

    With ``read_ahead``, opening a shard also asks the kernel to read all
    of it into the page cache (``posix_fadvise(WILLNEED)``).

    Only the size is checked when a shard is opened, unless ``sha256`` is
    given (``verify=True`` in the loaders): then the whole shard is hashed
    once per process at its first use and compared with the index, which
    catches a flipped byte.  ``python -m packer verify`` does the same once,
    for every shard.
    """

    def __init__(
        self,
        paths: Sequence[str],
        sizes: Sequence[int],
        sha256: Optional[Sequence[Optional[str]]] = None,
        read_ahead: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.sizes = list(sizes)
        self.sha256 = list(sha256) if sha256 is not None else None
        self.read_ahead = read_ahead and hasattr(os, "posix_fadvise")
        self.open_fds: Dict[int, int] = {}  # shard -> descriptor; read-only outside, fd() fills it
        self._owned: Dict[int, int] = {}  # descriptors this process opened
        self._failed: Dict[int, str] = {}  # shards that could not be opened, and why
        self._pid = os.getpid()

    def __del__(self) -> None:
        self.close()

    def fd(self, shard: int, sample: int) -> int:
        """Descriptor of shard ``shard``; ``sample`` names what needed it."""
        fd = self.open_fds.get(shard)
        if fd is None:
            fd = self._open(shard, sample)
        return fd

    def _open(self, shard: int, sample: int) -> int:
        reason = self._failed.get(shard)
        if reason is None:
            try:
                return self._try_open(shard)
            except ShardError as exc:
                reason = self._failed[shard] = str(exc)
        # Each failure names the sample that needed the shard this time.
        error = ShardError(f"{reason} (needed for sample {sample})")
        error.shard, error.whole_shard = shard, True
        raise error

    def _try_open(self, shard: int) -> int:
        path = self.paths[shard]
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise ShardError(f"{path}: shard missing") from None
        except OSError as exc:
            raise ShardError(f"{path}: cannot open shard: {exc.strerror}") from None
        actual = os.fstat(fd).st_size
        if actual != self.sizes[shard]:
            os.close(fd)
            raise ShardError(
                f"{path}: shard is {actual} bytes but its index says {self.sizes[shard]}: "
                f"it changed since it was indexed"
            )
        if self.sha256 is not None and self.sha256[shard]:
            digest = _sha256_fd(fd)
            if digest != self.sha256[shard]:
                os.close(fd)
                raise ShardError(
                    f"{path}: SHA-256 {digest[:16]}... differs from the index's {self.sha256[shard][:16]}...: "
                    f"the shard is corrupt or was changed"
                )
        if self.read_ahead:
            _read_ahead(fd, actual)
        if self._pid != os.getpid():  # first descriptor of a forked child
            self._owned, self._pid = {}, os.getpid()
        self.open_fds[shard] = self._owned[shard] = fd
        return fd

    def read(self, shard: int, start: int, end: int, sample: int) -> bytes:
        """Bytes ``start .. end-1`` of a shard; a short read is a ShardError."""
        data = pread_exact(self.fd(shard, sample), end - start, start)
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
        self.open_fds.clear()
        self._failed.clear()


def verified_hashes(index, verify: bool) -> Optional[Sequence[Optional[str]]]:
    """The shard hashes to check, for ``verify=True``; refuses tars without any."""
    if not verify:
        return None
    hashes = getattr(index, "shard_sha256", None)
    if not hashes or not all(hashes):
        raise ValueError(
            "verify=True needs shards of a dataset made by 'python -m packer build' (its directory, or its tar files), "
            "whose index records every shard's SHA-256; these tars are not all unchanged shards of one such dataset, "
            "so they have no recorded hashes"
        )
    return hashes
