"""Check a finished dataset: shard bytes against their hashes, index against headers."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List, Optional

from .index import PackedIndex
from .names import member_name
from .progress import progress_bar
from .tarfmt import TarFormatError, iter_members

_HASH_CHUNK = 4 << 20


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_HASH_CHUNK)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def verify_shard(index: PackedIndex, shard: int) -> List[str]:
    """Problems found in one shard, each naming the shard (and offset)."""
    info = index.shards[shard]
    path = index.shard_path(shard)
    name = info["name"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [f"{name}: missing"]
    problems = []
    if size != info["num_bytes"]:
        problems.append(f"{name}: {size} bytes, index says {info['num_bytes']}")
    if _hash_file(path) != info["sha256"]:
        problems.append(f"{name}: sha256 differs from index.json (contents changed)")
    expected = []
    for i in index.shard_samples(shard):
        key = index.key(i)
        for ext, offset, length in index.members(i):
            expected.append((member_name(key, ext), offset, length))
    fd = os.open(path, os.O_RDONLY)
    try:
        found = 0
        for member in iter_members(lambda off, n: os.pread(fd, n, off), size):
            if not member.is_file:
                problems.append(f"{name}: unexpected {member.typeflag!r} entry {member.name!r} at offset {member.header_offset}")
                break
            if found >= len(expected):
                problems.append(f"{name}: extra member {member.name!r} at offset {member.header_offset}")
                break
            want = expected[found]
            got = (member.name, member.data_offset, member.size)
            if got != want:
                problems.append(
                    f"{name}: member at offset {member.header_offset} is {got[0]!r} "
                    f"(data at {got[1]}, {got[2]} bytes); index says {want[0]!r} (data at {want[1]}, {want[2]} bytes)"
                )
                break
            found += 1
        else:
            if found < len(expected):
                problems.append(f"{name}: {found} members, index says {len(expected)}")
    except TarFormatError as exc:
        problems.append(f"{name}: {exc}")
    finally:
        os.close(fd)
    return problems


_worker_index: Optional[PackedIndex] = None


def _init(root: str) -> None:
    global _worker_index
    _worker_index = PackedIndex(root)


def _verify_in_worker(shard: int) -> List[str]:
    assert _worker_index is not None
    return verify_shard(_worker_index, shard)


def verify_dataset(root: os.PathLike | str, *, workers: int = 1, quiet: bool = True) -> List[str]:
    """All problems found in the dataset at ``root``; empty when it is intact."""
    index = PackedIndex(root)
    shards = range(index.num_shards)
    problems: List[str] = []
    with progress_bar(quiet, desc="verifying", total=index.num_shards, unit=" shards") as bar:
        if workers <= 1 or index.num_shards <= 1:
            for shard in shards:
                problems += verify_shard(index, shard)
                bar.update(1)
        else:
            with ProcessPoolExecutor(min(workers, index.num_shards), initializer=_init, initargs=(str(root),)) as pool:
                for found in pool.map(_verify_in_worker, shards):
                    problems += found
                    bar.update(1)
    return problems
