"""``source`` argument -> one SampleIndex over all shards.

A source is a packed dataset directory (its binary index is memory-mapped,
no tar is read), or tar files written by anyone: a path, a list of paths, a
glob (``shards/*.tar``) or a brace pattern (``shards-{000..099}.tar``); their
indexes come from :mod:`loaders.tarindex`, except when they are all shards
of one packed dataset (all of them, or a subset, in any order): then the
entries of those shards are taken from its index.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from packer.errors import PackerError
from packer.index import PLAN_DIR, PackedIndex, is_dataset
from packer.table import concat_sample_columns

from .errors import ShardError
from .tarindex import TarIndex, empty_tar_index, load_tar_index

Source = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


@dataclass
class SampleIndex:
    """Every sample of a source, in the packed index's column layout.

    Samples are numbered shard by shard in tar order.  ``member_ext`` indexes
    ``extensions``; offsets are bytes into the sample's shard.
    """

    shard_paths: List[str]
    shard_bytes: List[int]
    extensions: List[str]
    keys: np.ndarray
    key_offsets: np.ndarray
    sample_shard: np.ndarray
    sample_offset: np.ndarray
    sample_members: np.ndarray
    member_ext: np.ndarray
    member_offset: np.ndarray
    member_size: np.ndarray
    shard_sha256: Optional[List[str]] = None  # recorded by the packer; None for tars indexed here

    @property
    def num_samples(self) -> int:
        return len(self.key_offsets) - 1

    def shard_counts(self) -> np.ndarray:
        """Samples in each shard (int64)."""
        return np.bincount(self.sample_shard, minlength=len(self.shard_paths)).astype(np.int64)

    def key(self, i: int) -> str:
        return bytes(self.keys[int(self.key_offsets[i]) : int(self.key_offsets[i + 1])]).decode("utf-8", "surrogateescape")


def is_remote(url: str) -> bool:
    """True for what only webdataset's openers can read (``pipe:``, URLs)."""
    return url.startswith("pipe:") or "://" in url


def expand_source(source: Source) -> List[str]:
    """Tar paths named by a list, glob or brace pattern (sorted for globs)."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if "{" in text and "}" in text and not os.path.exists(text):
            import braceexpand

            paths = list(braceexpand.braceexpand(text))
        elif any(c in text for c in "*?["):
            paths = sorted(glob.glob(text))
            if not paths:
                raise FileNotFoundError(f"no files match {text!r}")
        else:
            if not os.path.exists(text) and not is_remote(text):
                raise FileNotFoundError(
                    f"{text}: no such file or directory (pass a dataset directory made by "
                    f"'python -m packer build', or tar files: a path, a list, a glob or a brace pattern)"
                )
            paths = [text]
    else:
        paths = [os.fspath(p) for p in source]
    if not paths:
        raise ValueError("the source names no tar files")
    return paths


def open_index(
    source: Source,
    cache_dir: Optional[os.PathLike | str] = None,
    skip_tar: Optional[Callable[[str, BaseException], bool]] = None,
) -> SampleIndex:
    """One index over ``source``.  A tar that cannot be indexed raises,
    unless ``skip_tar(path, error)`` returns True: then it counts as a tar
    with no samples (the caller must decide alike in every process, so that
    shares stay equal)."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        if not is_dataset(source) and (Path(source) / PLAN_DIR).is_dir():
            raise ValueError(
                f"{os.fspath(source)}: its build did not finish (no index.json yet); finish it with "
                f"'python -m packer build SRC {os.fspath(source)} --resume' (its tar files may be incomplete)"
            )
        if not is_dataset(source):
            raise ValueError(
                f"{os.fspath(source)}: a directory without index.json; pass a dataset made by "
                f"'python -m packer build', or the tar files themselves (e.g. {os.path.join(os.fspath(source), '*.tar')})"
            )
        return _from_packed(PackedIndex(source))
    paths = expand_source(source)
    named = _packed_shards_named(paths)
    if named is None:
        return _from_tars(paths, cache_dir, skip_tar)
    packed, shards = named
    if shards == list(range(packed.num_shards)):
        index = _from_packed(packed)
        index.shard_paths = list(paths)  # the same files, named as the caller named them
        return index
    return _joined(paths, [_packed_shard(packed, j) for j in shards], [packed.shards[j].get("sha256") for j in shards])


def _packed_shards_named(paths: List[str]) -> Optional[Tuple[PackedIndex, List[int]]]:
    """The packed dataset all of whose ``paths`` are shards, and which
    shards they are (``shards/*.tar``, or a subset such as the first ten):
    their entries are then taken from its index instead of reading every
    tar header, and no cache file is written into the dataset."""
    parents = {os.path.dirname(os.path.abspath(p)) for p in paths}
    if len(parents) != 1:
        return None
    root = parents.pop()
    if not is_dataset(root):
        return None
    try:
        packed = PackedIndex(root)
        shard_of = {os.path.realpath(packed.shard_path(j)): j for j in range(packed.num_shards)}
        shards = [shard_of.get(os.path.realpath(p)) for p in paths]
        if None in shards:
            return None
        if any(os.path.getsize(p) != packed.shards[j]["num_bytes"] for p, j in zip(paths, shards)):
            return None  # a shard was replaced since: read the tars as they are now
    except (OSError, ValueError, PackerError):
        return None  # a damaged index: read the tars themselves
    return packed, shards  # type: ignore[return-value]


def _packed_shard(packed: PackedIndex, shard: int) -> TarIndex:
    """One shard's entries of a packed index, as a tar index."""
    samples = packed.shard_samples(shard)
    a, b = samples.start, samples.stop
    key_offsets = np.asarray(packed.key_offsets[a : b + 1])
    members = np.asarray(packed.sample_members[a : b + 1])
    m0, m1 = int(members[0]), int(members[-1])
    return TarIndex(
        keys=np.asarray(packed.keys[int(key_offsets[0]) : int(key_offsets[-1])]),
        key_offsets=key_offsets - key_offsets[0],
        sample_offset=np.asarray(packed.sample_offset[a:b]),
        sample_members=members - members[0],
        member_ext=np.asarray(packed.member_ext[m0:m1]),
        member_offset=np.asarray(packed.member_offset[m0:m1]),
        member_size=np.asarray(packed.member_size[m0:m1]),
        extensions=_reader_extensions(packed),
        tar_bytes=int(packed.shards[shard]["num_bytes"]),
    )


def _reader_extensions(index: PackedIndex) -> List[str]:
    """The packed extensions lowercased, as every reader of the tars sees them."""
    return [ext.lower() for ext in index.extensions]


def _from_packed(index: PackedIndex) -> SampleIndex:
    return SampleIndex(
        shard_paths=[str(index.shard_path(j)) for j in range(index.num_shards)],
        shard_bytes=[s["num_bytes"] for s in index.shards],
        extensions=_reader_extensions(index),
        keys=index.keys,
        key_offsets=index.key_offsets,
        sample_shard=index.sample_shard,
        sample_offset=index.sample_offset,
        sample_members=index.sample_members,
        member_ext=index.member_ext,
        member_offset=index.member_offset,
        member_size=index.member_size,
        shard_sha256=[s.get("sha256") for s in index.shards],
    )


def _from_tars(paths: List[str], cache_dir: Optional[os.PathLike | str],
               skip_tar: Optional[Callable[[str, BaseException], bool]] = None) -> SampleIndex:
    parts = []
    for path in paths:
        try:
            parts.append(load_tar_index(path, cache_dir))
        except ShardError as exc:
            if skip_tar is None or not skip_tar(path, exc):
                raise
            parts.append(empty_tar_index(path))
    return _joined(paths, parts)


def _joined(paths: List[str], parts: List[TarIndex], sha256: Optional[List[Optional[str]]] = None) -> SampleIndex:
    """One index over ``parts`` (one per path), samples numbered in turn."""
    keys, key_offsets, sample_members, member_ext, extensions = concat_sample_columns(parts)

    def cat(name: str, dtype) -> np.ndarray:
        arrays = [getattr(p, name) for p in parts]
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)

    return SampleIndex(
        shard_paths=list(paths),
        shard_bytes=[p.tar_bytes for p in parts],
        extensions=extensions,
        keys=keys,
        key_offsets=key_offsets,
        sample_shard=np.repeat(np.arange(len(parts), dtype=np.uint32), [p.num_samples for p in parts]),
        sample_offset=cat("sample_offset", np.uint64),
        sample_members=sample_members,
        member_ext=member_ext,
        member_offset=cat("member_offset", np.uint64),
        member_size=cat("member_size", np.uint64),
        shard_sha256=sha256,
    )
