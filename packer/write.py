"""Plan -> shard files: one shard per task, in parallel, atomically.

A shard's bytes depend only on the plan, so any number of workers gives
byte-identical output.  Each shard is written to a hidden temporary name and
renamed when complete and checked against the planned size.  Source files
are checked against the plan's size as they are read: a file that vanished,
became unreadable, grew or shrank since the scan stops the build (naming
file, shard and offset), or with ``on_error="skip"`` drops its whole sample.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .errors import PackerError
from .index import load_plan, save_shard_record, temp_path
from .names import unescape_key
from .scan import Skipped
from .table import SampleTable
from .tarfmt import BLOCK, END_OF_ARCHIVE, member_header, plain_headers

_CHUNK = 4 << 20  # bytes gathered before one hash update and one write
_SINGLE_READ_LIMIT = 0x7FFFF000  # Linux returns at most this much per read()
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_ZERO_BLOCK = memoryview(bytes(BLOCK))


@dataclass
class ShardResult:
    shard: int
    num_bytes: int
    sha256: str
    dropped: List[int] = field(default_factory=list)  # sample ids (plan order)
    skipped: List[Skipped] = field(default_factory=list)


@dataclass
class ShardJob:
    """What one worker needs to know besides the plan itself."""

    src: str
    dst: str
    names: List[str]
    on_error: str


def _read_member(path: str, size: int) -> bytes:
    """Read a source file, refusing one whose size differs from the plan.

    One ``read`` of ``size + 1`` bytes tells a file that grew from one that
    is intact without an extra ``fstat``; only files past the kernel's 2 GiB
    per-read limit take the slower loop.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise _SourceProblem("vanished during the build") from None
    except PermissionError:
        raise _SourceProblem("permission denied") from None
    except OSError as exc:
        raise _SourceProblem(f"cannot open: {exc.strerror}") from None
    try:
        if size < _SINGLE_READ_LIMIT:
            data = os.read(fd, size + 1)
            if len(data) == size:
                return data
            raise _SourceProblem(_size_changed(len(data), size))
        chunks, remaining = [], size
        while remaining:
            chunk = os.read(fd, min(remaining, _SINGLE_READ_LIMIT))
            if not chunk:
                raise _SourceProblem(_size_changed(size - remaining, size))
            chunks.append(chunk)
            remaining -= len(chunk)
        if os.read(fd, 1):
            raise _SourceProblem(_size_changed(size + 1, size))
        return b"".join(chunks)
    except OSError as exc:
        raise _SourceProblem(f"read failed: {exc.strerror}") from None
    finally:
        os.close(fd)


def _size_changed(found: int, planned: int) -> str:
    if found > planned:
        return f"changed during the build (grew past the planned {planned} bytes)"
    return f"changed during the build (now {found} bytes, planned {planned})"


class _SourceProblem(Exception):
    pass


def write_shard(
    table: SampleTable,
    bounds: np.ndarray,
    shard: int,
    job: ShardJob,
    progress: Optional[Sequence] = None,
) -> ShardResult:
    """Write shard ``shard`` of the plan; returns its size, hash and drops.

    ``progress`` (length ``2 * num_shards``) receives this shard's bytes
    written at ``[shard]`` and samples written at ``[num_shards + shard]``;
    one slot per shard, so workers never contend for a lock.
    """
    lo, hi = int(bounds[shard]), int(bounds[shard + 1])
    num_shards = len(bounds) - 1
    key_offsets = table.key_offsets[lo : hi + 1].tolist()
    base = key_offsets[0]
    key_blob = table.keys[base : key_offsets[-1]].tobytes()
    sample_members = table.sample_members[lo : hi + 1].tolist()
    m_lo = sample_members[0]
    ext_ids = table.member_ext[m_lo : sample_members[-1]].tolist()
    sizes = table.member_size[m_lo : sample_members[-1]].tolist()
    dot_ext_bytes = [b"." + e.encode("utf-8") for e in table.extensions]
    dot_ext_text = ["." + e for e in table.extensions]
    src_prefix = os.path.join(job.src, "")
    # Member names and plain ustar headers for the whole shard, built up
    # front: one numpy call instead of a Python call per member.
    names: List[bytes] = []
    stems: List[str] = []
    for i in range(hi - lo):
        key = key_blob[key_offsets[i] - base : key_offsets[i + 1] - base]
        stems.append(unescape_key(key.decode("utf-8")))
        for m in range(sample_members[i] - m_lo, sample_members[i + 1] - m_lo):
            names.append(key + dot_ext_bytes[ext_ids[m]])
    plain = table.member_header_size[m_lo : sample_members[-1]] == BLOCK
    plain_slot = (np.cumsum(plain) - 1).tolist()
    plain = plain.tolist()
    plain_blob = memoryview(plain_headers([n for n, p in zip(names, plain) if p], [z for z, p in zip(sizes, plain) if p]))
    name = job.names[shard]
    final = Path(job.dst) / name
    tmp = temp_path(final)
    result = ShardResult(shard=shard, num_bytes=0, sha256="")
    digest = hashlib.sha256()
    flushed = 0  # bytes already hashed and written
    buf = bytearray()
    try:
        with open(tmp, "wb", buffering=0) as out:

            def flush() -> None:
                nonlocal flushed
                digest.update(buf)
                done = 0
                with memoryview(buf) as whole:
                    while done < len(buf):
                        done += out.write(whole[done:])
                flushed += done
                buf.clear()

            for i in range(hi - lo):
                stem = stems[i]
                sample_start = len(buf)
                m = sample_members[i] - m_lo
                m_end = sample_members[i + 1] - m_lo
                try:
                    while m < m_end:
                        size = sizes[m]
                        rel = stem + dot_ext_text[ext_ids[m]]
                        data = _read_member(src_prefix + rel, size)
                        if plain[m]:
                            slot = plain_slot[m] * BLOCK
                            buf += plain_blob[slot : slot + BLOCK]
                        else:
                            buf += member_header(names[m], size)
                        buf += data
                        if size % BLOCK:
                            buf += _ZERO_BLOCK[size % BLOCK :]
                        m += 1
                except _SourceProblem as problem:
                    del buf[sample_start:]
                    if job.on_error != "skip":
                        raise PackerError(
                            f"{src_prefix + rel}: {problem} (shard {name}, offset {flushed + sample_start})"
                        ) from None
                    result.dropped.append(lo + i)
                    result.skipped.append(Skipped(rel, str(problem)))
                    continue
                if len(buf) >= _CHUNK:
                    flush()
                    if progress is not None:
                        progress[shard] = flushed
                        progress[num_shards + shard] = i + 1 - len(result.dropped)
            buf += END_OF_ARCHIVE
            flush()
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if progress is not None:
        progress[shard] = flushed
        progress[num_shards + shard] = hi - lo - len(result.dropped)
    result.num_bytes = flushed
    result.sha256 = digest.hexdigest()
    save_shard_record(
        Path(job.dst),
        {
            "shard": shard,
            "name": name,
            "num_bytes": flushed,
            "sha256": result.sha256,
            "dropped": result.dropped,
            "skipped": [{"path": s.path, "reason": s.reason} for s in result.skipped],
        },
    )
    return result


# ------------------------------------------------------------ parallel driver

_worker_state: Dict[str, object] = {}


def _init_worker(plan_root: str, job: ShardJob, progress) -> None:
    table, bounds, _ = load_plan(Path(plan_root))
    _worker_state.update(table=table, bounds=bounds, job=job, progress=progress)


def _run_in_worker(shard: int) -> ShardResult:
    s = _worker_state
    return write_shard(s["table"], s["bounds"], shard, s["job"], s["progress"])  # type: ignore[arg-type]


def process_context() -> multiprocessing.context.BaseContext:
    # fork starts fastest and the parent holds no threads at this point;
    # elsewhere spawn is the only safe choice.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def write_shards(
    table: SampleTable,
    bounds: np.ndarray,
    shards: Sequence[int],
    job: ShardJob,
    *,
    workers: int,
    on_progress: Optional[Callable[[int, int], None]] = None,
    poll_seconds: float = 0.2,
) -> List[ShardResult]:
    """Write ``shards`` with up to ``workers`` processes (plan saved in ``job.dst``).

    ``on_progress(bytes_written, samples_written)`` is called as work proceeds.  On the
    first failure, shards not yet started are cancelled and the error raised.
    """
    num_shards = len(bounds) - 1
    workers = max(1, min(workers, len(shards)))
    if workers == 1:
        progress = np.zeros(2 * num_shards, dtype=np.int64)
        results = []
        for shard in shards:
            results.append(write_shard(table, bounds, shard, job, progress))
            if on_progress is not None:
                on_progress(int(progress[:num_shards].sum()), int(progress[num_shards:].sum()))
        return results
    ctx = process_context()
    shared = ctx.Array("q", 2 * num_shards, lock=False)
    results: List[ShardResult] = []
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(job.dst, job, shared)) as pool:
        pending: set[Future] = {pool.submit(_run_in_worker, s) for s in shards}
        try:
            while pending:
                done, pending = wait(pending, timeout=poll_seconds, return_when=FIRST_COMPLETED)
                for future in done:
                    results.append(future.result())
                if on_progress is not None:
                    counts = np.frombuffer(shared, dtype=np.int64)
                    on_progress(int(counts[:num_shards].sum()), int(counts[num_shards:].sum()))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    results.sort(key=lambda r: r.shard)
    return results
