"""Plan -> shard files: one shard per task, in parallel, atomically.

A shard's bytes depend only on the plan, so any number of workers gives
byte-identical output.  Each shard is written to a hidden temporary name and
renamed when complete and checked against the planned size.  Source files
are checked against the plan's size and modification time as they are read:
a file that changed or vanished since the scan stops the build (naming file,
shard and offset), or with ``on_error="skip"`` drops its whole sample.
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
from .names import source_path
from .scan import Skipped
from .table import SampleTable
from .tarfmt import END_OF_ARCHIVE, member_header, padded

_WRITE_BUFFER = 1 << 20


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


def _read_member(path: str, size: int, mtime_ns: int) -> bytes:
    """Read a source file, refusing one that differs from the plan."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise _SourceProblem("vanished during the build") from None
    except PermissionError:
        raise _SourceProblem("permission denied") from None
    except OSError as exc:
        raise _SourceProblem(f"cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_size != size:
            raise _SourceProblem(f"changed during the build (now {st.st_size} bytes, planned {size})")
        if st.st_mtime_ns != mtime_ns:
            raise _SourceProblem("modified during the build (modification time changed)")
        chunks = []
        remaining = size
        while remaining:
            chunk = os.read(fd, remaining)
            if not chunk:
                raise _SourceProblem(f"shrank during the build (read {size - remaining} of {size} bytes)")
            chunks.append(chunk)
            remaining -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as exc:
        raise _SourceProblem(f"read failed: {exc.strerror}") from None
    finally:
        os.close(fd)


class _SourceProblem(Exception):
    pass


def write_shard(
    table: SampleTable,
    bounds: np.ndarray,
    shard: int,
    job: ShardJob,
    progress: Optional[Sequence] = None,
) -> ShardResult:
    """Write shard ``shard`` of the plan; returns its size, hash and drops."""
    lo, hi = int(bounds[shard]), int(bounds[shard + 1])
    key_offsets = table.key_offsets[lo : hi + 1].tolist()
    key_blob = table.keys[key_offsets[0] : key_offsets[-1]].tobytes()
    base = key_offsets[0]
    sample_members = table.sample_members[lo : hi + 1].tolist()
    m_lo, m_hi = sample_members[0], sample_members[-1]
    ext_ids = table.member_ext[m_lo:m_hi].tolist()
    sizes = table.member_size[m_lo:m_hi].tolist()
    mtimes = table.member_mtime_ns[m_lo:m_hi].tolist()
    ext_bytes = [e.encode("utf-8") for e in table.extensions]
    name = job.names[shard]
    final = Path(job.dst) / name
    tmp = temp_path(final)
    result = ShardResult(shard=shard, num_bytes=0, sha256="")
    digest = hashlib.sha256()
    offset = 0
    try:
        with open(tmp, "wb", buffering=_WRITE_BUFFER) as out:
            for i in range(hi - lo):
                key = key_blob[key_offsets[i] - base : key_offsets[i + 1] - base]
                key_text = key.decode("utf-8")
                pieces = []
                try:
                    for m in range(sample_members[i] - m_lo, sample_members[i + 1] - m_lo):
                        ext = ext_bytes[ext_ids[m]]
                        rel = source_path(key_text, table.extensions[ext_ids[m]])
                        try:
                            data = _read_member(os.path.join(job.src, rel), sizes[m], mtimes[m])
                        except _SourceProblem as problem:
                            problem.rel = rel  # type: ignore[attr-defined]
                            raise
                        pieces.append(member_header(key + b"." + ext, sizes[m]))
                        pieces.append(data)
                        pad = padded(sizes[m]) - sizes[m]
                        if pad:
                            pieces.append(bytes(pad))
                except _SourceProblem as problem:
                    rel = problem.rel  # type: ignore[attr-defined]
                    if job.on_error != "skip":
                        raise PackerError(
                            f"{os.path.join(job.src, rel)}: {problem} (shard {name}, offset {offset})"
                        ) from None
                    result.dropped.append(lo + i)
                    result.skipped.append(Skipped(rel, str(problem)))
                    continue
                for piece in pieces:
                    digest.update(piece)
                    out.write(piece)
                    offset += len(piece)
                if progress is not None:
                    progress[shard] = offset
            out.write(END_OF_ARCHIVE)
            digest.update(END_OF_ARCHIVE)
            offset += len(END_OF_ARCHIVE)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if progress is not None:
        progress[shard] = offset
    result.num_bytes = offset
    result.sha256 = digest.hexdigest()
    save_shard_record(
        Path(job.dst),
        {
            "shard": shard,
            "name": name,
            "num_bytes": offset,
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


def _context() -> multiprocessing.context.BaseContext:
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
    on_progress: Optional[Callable[[int], None]] = None,
    poll_seconds: float = 0.2,
) -> List[ShardResult]:
    """Write ``shards`` with up to ``workers`` processes (plan saved in ``job.dst``).

    ``on_progress(bytes_written_so_far)`` is called as work proceeds.  On the
    first failure, shards not yet started are cancelled and the error raised.
    """
    num_shards = len(bounds) - 1
    workers = max(1, min(workers, len(shards)))
    if workers == 1:
        progress = np.zeros(num_shards, dtype=np.int64)
        results = []
        for shard in shards:
            results.append(write_shard(table, bounds, shard, job, progress))
            if on_progress is not None:
                on_progress(int(progress.sum()))
        return results
    ctx = _context()
    shared = ctx.Array("q", num_shards, lock=False)
    results: List[ShardResult] = []
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(job.dst, job, shared)) as pool:
        pending: set[Future] = {pool.submit(_run_in_worker, s) for s in shards}
        try:
            while pending:
                done, pending = wait(pending, timeout=poll_seconds, return_when=FIRST_COMPLETED)
                for future in done:
                    results.append(future.result())
                if on_progress is not None:
                    on_progress(int(np.frombuffer(shared, dtype=np.int64).sum()))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    results.sort(key=lambda r: r.shard)
    return results
