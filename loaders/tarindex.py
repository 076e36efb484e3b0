"""Indexes for tars written by other tools, built once and cached.

A tar is indexed by walking its headers (ustar, PAX, GNU long names) with
:func:`packer.tarfmt.iter_members`; data blocks are never read.  Members are
grouped into samples exactly as WebDataset readers do (a compressed tar, or
a member with an absolute or ``..`` path, is refused with ShardError): key = directory +
basename up to the first dot, extension lowercased, consecutive members with
the same key form one sample, names matching ``__*__`` (webdataset's
metadata) and names without a dot are skipped.

The index of ``x.tar`` is cached as ``x.tar.pkidx.npz`` beside it, or, when
that directory is not writable, under ``$XDG_CACHE_HOME/packer/tarindex``
(default ``~/.cache/packer/tarindex``).  A cache is used only while the
tar's size, modification time, inode and change time match those recorded.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from packer.index import temp_path
from packer.names import reader_split
from packer.tarfmt import TarFormatError, iter_members

from .errors import ShardError

CACHE_SUFFIX = ".pkidx.npz"
_NO_DATA = (b"5", b"D", b"V")  # directories (GNU dumpdir too), volume labels: nothing of a sample is lost
_KINDS = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
          b"6": "a FIFO", b"S": "a GNU sparse file"}
CACHE_VERSION = 3  # 2: the split-sample warning is cached too; 3: so is the left-out-members one
_WDS_META_RE = re.compile(r"__[^/]*__($|/)")
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))


@dataclass
class TarIndex:
    """One tar's samples, in the same column layout as a packed index."""

    keys: np.ndarray
    key_offsets: np.ndarray
    sample_offset: np.ndarray
    sample_members: np.ndarray
    member_ext: np.ndarray  # index into extensions
    member_offset: np.ndarray
    member_size: np.ndarray
    extensions: List[str]
    tar_bytes: int
    warning: str = ""  # shown each time the index is loaded, cached or not

    @property
    def num_samples(self) -> int:
        return len(self.key_offsets) - 1


def build_tar_index(path: os.PathLike | str) -> TarIndex:
    """Walk ``path``'s headers and group its members into samples.

    A tar whose samples are split apart gets a ``warning`` in the result
    (not issued here): :func:`load_tar_index` shows it at every load."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ShardError(f"{path}: cannot open shard: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        magic = os.pread(fd, 6, 0)
        for signature, kind in _COMPRESSED:
            if magic.startswith(signature):
                raise ShardError(f"{path}: a {kind}-compressed tar; random access needs an uncompressed tar (decompress it first)")
        keys = bytearray()
        key_offsets, sample_offset, sample_members = [0], [], [0]
        member_ext, member_offset, member_size = [], [], []
        ext_ids: Dict[str, int] = {}
        current_key: Optional[str] = None
        current_exts: set = set()
        started: set = set()  # keys that began a sample
        split: List[str] = []  # keys whose members are not next to each other
        left_out: List[Tuple[str, bytes]] = []  # (name, typeflag) of links, devices, sparse files...
        for member in iter_members(lambda off, n: os.pread(fd, n, off), size):
            if not member.is_file:
                if member.typeflag not in _NO_DATA:
                    left_out.append((member.name, member.typeflag))
                continue
            name = member.name
            if name.startswith("/") or ".." in name.split("/"):
                raise ShardError(f"{path}: member {name!r} at offset {member.header_offset} has an absolute or '..' path")
            if _WDS_META_RE.match(name):
                continue
            key, ext = reader_split(name)
            if key is None:
                continue
            ext = ext.lower()
            if key != current_key:
                if current_key is not None:
                    sample_members.append(len(member_size))
                if key in started:
                    split.append(key)
                started.add(key)
                keys += key.encode("utf-8", "surrogateescape")
                key_offsets.append(len(keys))
                sample_offset.append(member.header_offset)
                current_key, current_exts = key, set()
            elif ext in current_exts:
                raise ShardError(
                    f"{path}: member {name!r} at offset {member.header_offset} repeats extension "
                    f"{ext!r} of sample {key!r}"
                )
            current_exts.add(ext)
            member_ext.append(ext_ids.setdefault(ext, len(ext_ids)))
            member_offset.append(member.data_offset)
            member_size.append(member.size)
        if current_key is not None:
            sample_members.append(len(member_size))
        problems = []
        if split:
            problems.append(
                f"{path}: the members of {len(split)} key(s) are not next to each other (e.g. {split[0]!r}); "
                "as in webdataset, each run of members with one key is read as a separate sample. Write "
                "tars with each sample's files together (e.g. GNU tar --sort=name, or python -m packer build)."
            )
        if left_out:
            name, typeflag = left_out[0]
            problems.append(
                f"{path}: {len(left_out)} member(s) that are not regular files were left out (e.g. {name!r}, "
                f"{_KINDS.get(typeflag, f'of type {typeflag!r}')}), as webdataset leaves them out; their data is "
                "not in these samples. Archive the files themselves (GNU tar --hard-dereference --dereference)."
            )
        warning = "\n".join(problems)
    except TarFormatError as exc:
        raise ShardError(f"{path}: {exc}") from None
    finally:
        os.close(fd)
    return TarIndex(
        keys=np.frombuffer(bytes(keys), dtype=np.uint8),
        key_offsets=np.array(key_offsets, dtype=np.uint64),
        sample_offset=np.array(sample_offset, dtype=np.uint64),
        sample_members=np.array(sample_members, dtype=np.uint64),
        member_ext=np.array(member_ext, dtype=np.uint32),
        member_offset=np.array(member_offset, dtype=np.uint64),
        member_size=np.array(member_size, dtype=np.uint64),
        extensions=list(ext_ids),
        tar_bytes=size,
        warning=warning,
    )


def empty_tar_index(path: os.PathLike | str) -> TarIndex:
    """The index of a tar left out (one that could not be indexed)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return TarIndex(
        keys=np.zeros(0, dtype=np.uint8),
        key_offsets=np.zeros(1, dtype=np.uint64),
        sample_offset=np.zeros(0, dtype=np.uint64),
        sample_members=np.zeros(1, dtype=np.uint64),
        member_ext=np.zeros(0, dtype=np.uint32),
        member_offset=np.zeros(0, dtype=np.uint64),
        member_size=np.zeros(0, dtype=np.uint64),
        extensions=[],
        tar_bytes=size,
    )


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "packer" / "tarindex"


def cache_paths(tar: Path, cache_dir: Optional[Path] = None) -> List[Path]:
    """Where the cache of ``tar`` may live, in the order they are tried."""
    absolute = tar.resolve()
    fallback = (cache_dir or user_cache_dir()) / (hashlib.sha256(str(absolute).encode()).hexdigest()[:32] + CACHE_SUFFIX)
    return [absolute.with_name(absolute.name + CACHE_SUFFIX), fallback]


def _fingerprint(tar: Path) -> np.ndarray:
    """What must match for a cached index to be used: size, modification
    time, inode and change time (copy tools can preserve a modification
    time, never a change time)."""
    st = tar.stat()
    return np.array([CACHE_VERSION, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns], dtype=np.int64)


def _load_cache(cache: Path, fingerprint: np.ndarray) -> Optional[TarIndex]:
    try:
        with np.load(cache, allow_pickle=False) as data:
            if not np.array_equal(data["fingerprint"], fingerprint):
                return None
            extensions = bytes(data["extensions"]).decode("utf-8").split("\n") if data["extensions"].size else []
            return TarIndex(
                **{k: data[k] for k in ("keys", "key_offsets", "sample_offset", "sample_members", "member_ext", "member_offset", "member_size")},
                extensions=extensions,
                tar_bytes=int(fingerprint[1]),
                warning=bytes(data["warning"]).decode("utf-8"),
            )
    except (OSError, ValueError, KeyError):
        return None  # missing, unreadable or foreign: rebuild


def _save_cache(cache: Path, index: TarIndex, fingerprint: np.ndarray) -> bool:
    tmp = temp_path(cache)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(
                f,
                fingerprint=fingerprint,
                extensions=np.frombuffer("\n".join(index.extensions).encode("utf-8"), dtype=np.uint8),
                warning=np.frombuffer(index.warning.encode("utf-8"), dtype=np.uint8),
                **{k: getattr(index, k) for k in ("keys", "key_offsets", "sample_offset", "sample_members", "member_ext", "member_offset", "member_size")},
            )
        os.replace(tmp, cache)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def load_tar_index(tar: os.PathLike | str, cache_dir: Optional[os.PathLike | str] = None) -> TarIndex:
    """The index of ``tar``: from a valid cache, else built and cached."""
    tar = Path(tar)
    try:
        fingerprint = _fingerprint(tar)
    except FileNotFoundError:
        raise ShardError(f"{tar}: shard not found") from None
    candidates = cache_paths(tar, Path(cache_dir) if cache_dir else None)
    for cache in candidates:
        index = _load_cache(cache, fingerprint)
        if index is not None:
            break
    else:
        index = build_tar_index(tar)
        for cache in candidates:
            if _save_cache(cache, index, fingerprint):
                break
    if index.warning and not _in_dataloader_worker():  # the process that builds the dataset has said it
        warnings.warn(index.warning, stacklevel=3)
    return index


def _in_dataloader_worker() -> bool:
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None
