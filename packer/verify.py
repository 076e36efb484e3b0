"""Check a finished dataset: every shard against its hash, every index entry
against the tar headers (names, offsets, sizes, sample starts, and that each
name splits back into its key), and the manifest totals and wids.json
against the binary index."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import List, Optional

import numpy as np

from .index import WIDS_FILE, PackedIndex
from .names import member_name, reader_split
from .progress import progress_bar
from .tarfmt import TarFormatError, iter_members
from .pool import results_in_order, worker_pool

_HASH_CHUNK = 4 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MB chunks."""
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
    name = index.shards[shard]["name"]
    try:
        return _verify_shard(index, shard)
    except (IndexError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        return [f"{name}: index entries are inconsistent ({type(exc).__name__}: {exc})"]
    except OSError as exc:
        return [f"{name}: cannot read: {exc.strerror or exc}"]


def _verify_shard(index: PackedIndex, shard: int) -> List[str]:
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
    if sha256_file(path) != info["sha256"]:
        problems.append(f"{name}: sha256 differs from index.json (contents changed)")
    expected = []  # (member name, data offset, size, sample, first member of its sample)
    for i in index.shard_samples(shard):
        if int(index.sample_shard[i]) != shard:
            problems.append(f"{name}: index says sample {i} is in shard {int(index.sample_shard[i])}")
        key = index.key(i)
        for position, (ext, offset, length) in enumerate(index.members(i)):
            member = member_name(key, ext)
            if reader_split(member) != (key, ext):
                problems.append(f"{name}: member {member!r} does not split back into key {key!r} and extension {ext!r}")
            expected.append((member, offset, length, i, position == 0))
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
            want_name, want_offset, want_size, sample, first = expected[found]
            got = (member.name, member.data_offset, member.size)
            if got != (want_name, want_offset, want_size):
                problems.append(
                    f"{name}: member at offset {member.header_offset} is {got[0]!r} "
                    f"(data at {got[1]}, {got[2]} bytes); index says {want_name!r} (data at {want_offset}, {want_size} bytes)"
                )
                break
            if first and int(index.sample_offset[sample]) != member.header_offset:
                problems.append(
                    f"{name}: sample {sample} starts at offset {member.header_offset}; index says {int(index.sample_offset[sample])}"
                )
            found += 1
        else:
            if found < len(expected):
                problems.append(f"{name}: {found} members, index says {len(expected)}")
    except TarFormatError as exc:
        problems.append(f"{name}: {exc}")
    finally:
        os.close(fd)
    return problems


def verify_totals(index: PackedIndex) -> List[str]:
    """Manifest totals and wids.json against the binary index."""
    manifest, problems = index.manifest, []
    shards = index.shards
    first = 0
    for shard in shards:
        if shard["first_sample"] != first:
            problems.append(f"index.json: shard {shard['name']} starts at sample {shard['first_sample']}, expected {first}")
        first += shard["num_samples"]
    checks = {
        "num_samples": (manifest["num_samples"], first),
        "num_members": (manifest["num_members"], len(index.member_size)),
        "num_bytes": (manifest["num_bytes"], sum(s["num_bytes"] for s in shards)),
        "payload_bytes": (manifest["payload_bytes"], int(np.asarray(index.member_size, dtype=np.uint64).sum())),
        "num_shards": (manifest["num_shards"], len(shards)),
    }
    for field, (stated, actual) in checks.items():
        if stated != actual:
            problems.append(f"index.json: {field} is {stated}, the index holds {actual}")
    ext = np.asarray(index.member_ext, dtype=np.int64)
    if ext.size and (ext.max() >= len(index.extensions)):
        problems.append("index.json: member_ext refers to extensions the manifest does not list")
    else:
        counts = np.bincount(ext, minlength=len(index.extensions)).tolist()
        stated = [e["count"] for e in manifest["extensions"]]
        if counts != stated:
            problems.append(f"index.json: extension counts {stated} differ from the index {counts}")
    wids_path = index.root / WIDS_FILE
    try:
        wids = json.loads(wids_path.read_text("utf-8"))
        listed = [(s["url"], s["nsamples"], s["filesize"]) for s in wids["shardlist"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return problems + [f"{WIDS_FILE}: unreadable ({exc})"]
    if listed != [(s["name"], s["num_samples"], s["num_bytes"]) for s in shards]:
        problems.append(f"{WIDS_FILE}: shard list differs from index.json")
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
    problems: List[str] = verify_totals(index)
    with progress_bar(quiet, desc="verifying", total=index.num_shards, unit=" shards") as bar:
        if workers <= 1 or index.num_shards <= 1:
            for shard in shards:
                problems += verify_shard(index, shard)
                bar.update(1)
        else:
            with worker_pool(min(workers, index.num_shards), _init, (str(root),)) as (pool, check_interrupt):
                futures = [pool.submit(_verify_in_worker, shard) for shard in shards]
                for found in results_in_order(futures, check_interrupt):
                    problems += found
                    bar.update(1)
    return problems
