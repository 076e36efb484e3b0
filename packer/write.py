"""Plan -> shard files: one shard per task, in parallel, atomically.

A shard's bytes depend only on the saved plan, so any number of workers
gives byte-identical output.  Each shard is written to a hidden temporary
name and its size checked against the plan; then it is flushed to disk
(fsync), renamed into place and recorded as finished (``commit_shard``).
With several workers the parent process commits each shard while the
workers go on with the next ones, so waiting for the disk overlaps with
packing instead of stalling a worker after every shard.  Each source file is
checked as it is opened: it must still be a regular file with the size and
modification time the scan saw, and it must not grow while it is read.
(``fsync`` can be turned off for scratch builds where durability after a
power loss does not matter.)  A file that fails stops the build (naming
file, shard and offset), or with ``on_error="skip"`` its whole sample is
left out and recorded.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, MutableSequence, Optional, Sequence, Tuple

import numpy as np

from .errors import PackerError
from .index import load_plan, save_shard_record, temp_path
from .names import unescape_key
from .pool import POLL_SECONDS, process_context, worker_pool
from .scan import Skipped
from .sources import RowContainer
from .table import MEMBER_FILE, MEMBER_LABEL, MEMBER_ROW, SampleTable
from .tarfmt import BLOCK, END_OF_ARCHIVE, member_header, plain_headers

_CHUNK = 4 << 20  # bytes gathered before one hash update and one write
_STREAM_MEMBER = 16 << 20  # larger members are copied in chunks, never held whole
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_ZERO_BLOCK = memoryview(bytes(BLOCK))


@dataclass
class ShardResult:
    shard: int
    num_bytes: int
    sha256: str
    dropped: List[int] = field(default_factory=list)  # sample ids (plan order)
    skipped: List[Skipped] = field(default_factory=list)
    temp: Optional[str] = None  # written here, not yet committed (see commit_shard)


@dataclass(frozen=True)
class ShardJob:
    """Settings every shard task shares, read from the saved plan."""

    src: str
    dst: str
    names: List[str]
    on_error: str
    fsync: bool = True
    classes: Optional[Dict[str, int]] = None  # --labels-from-dir: class directory -> label


class _Containers:
    """Row containers opened by this process, kept open across shards.

    Shuffled rows of one container land in every shard, so each worker
    keeps containers open (one descriptor each) rather than reopening them
    per shard: up to a quarter of the process's descriptor limit.  Entries
    are keyed by path and planned modification time, and the cache is
    emptied at the start of every build, so a replaced file is never served
    from it.
    """

    def __init__(self) -> None:
        self.open: Dict[Tuple[str, int], RowContainer] = {}
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, ValueError, OSError):
            soft = 1024
        self.limit = max(8, min(4096, (soft if soft > 0 else 1024) // 4))

    def clear(self) -> None:
        for container in self.open.values():
            container.file.close()
        self.open.clear()

    def get(self, path: str, mtime_ns: int) -> RowContainer:
        container = self.open.pop((path, mtime_ns), None)
        if container is None:
            try:
                if os.stat(path).st_mtime_ns != mtime_ns:
                    raise _SourceProblem("modified during the build (modification time changed)")
                container = RowContainer(path, path)
            except FileNotFoundError:
                raise _SourceProblem("vanished during the build") from None
            except PackerError as exc:
                raise _SourceProblem(f"cannot be read any more: {exc}") from None
            if len(self.open) >= self.limit:
                self.open.pop(next(iter(self.open))).file.close()
        self.open[(path, mtime_ns)] = container  # most recently used last
        return container


_containers = _Containers()


def _generated_member(kind: int, stem: str, ext: str, size: int, src_prefix: str, mtime_ns: int, job: ShardJob) -> Tuple[str, bytes]:
    """(source shown in errors, bytes) of a member that is not a plain file."""
    if kind == MEMBER_LABEL:
        assert job.classes is not None
        data = str(job.classes[stem.split("/", 1)[0]]).encode("ascii")
        source = stem.split("/", 1)[0] + "/"
    else:  # MEMBER_ROW: the key is <container path>/<row>
        container_rel, row = stem.rsplit("/", 1)
        source = container_rel
        container = _containers.get(src_prefix + container_rel, mtime_ns)
        field = next((f for f in container.fields if f.ext == ext), None)
        if field is None or int(row) >= container.num_rows:
            raise _SourceProblem(f"changed during the build (row {int(row)} field .{ext} is gone)")
        try:
            data = container.member_bytes(field, int(row))
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise _SourceProblem(f"cannot read row {int(row)} field .{ext} ({type(exc).__name__}: {exc})") from None
    if len(data) != size:
        raise _SourceProblem(f"row {stem.rsplit('/', 1)[-1]} field .{ext} is {len(data)} bytes, but {size} were planned")
    return source, data


class _SourceProblem(Exception):
    """A source file that no longer matches the plan."""


def _open_member(path: str, size: int, mtime_ns: int) -> int:
    """Open a source file, refusing one that differs from the plan.

    ``O_NONBLOCK`` keeps a FIFO put in a file's place from hanging the
    build; ``fstat`` then rejects anything but the planned regular file.
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
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _SourceProblem("is no longer a regular file")
        if st.st_size != size:
            raise _SourceProblem(_size_changed(st.st_size, size))
        if st.st_mtime_ns != mtime_ns:
            raise _SourceProblem("modified during the build (modification time changed)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _size_changed(found: int, planned: int) -> str:
    if found > planned:
        return f"changed during the build (grew past the planned {planned} bytes)"
    return f"changed during the build (now {found} bytes, planned {planned})"


def _read_small(fd: int, size: int) -> bytes:
    """The whole file; one read of ``size + 1`` bytes also catches growth."""
    try:
        data = os.read(fd, size + 1)
    except OSError as exc:
        raise _SourceProblem(f"read failed: {exc.strerror}") from None
    if len(data) != size:
        raise _SourceProblem(_size_changed(len(data), size))
    return data


class _ShardFile:
    """A shard's temporary file, its running hash, and a write buffer.

    Members are gathered in ``buf`` and hashed and written every few MB.  A
    sample is undone by cutting ``buf`` back, or, for a sample streamed
    straight to the file, by truncating to a mark and restoring the hash.
    """

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb", buffering=0)
        self.digest = hashlib.sha256()
        self.flushed = 0
        self.buf = bytearray()

    @property
    def position(self) -> int:
        return self.flushed + len(self.buf)

    def flush(self) -> None:
        self.write_through(self.buf)
        self.buf.clear()

    def write_through(self, data) -> None:
        self.digest.update(data)
        done = 0
        with memoryview(data) as view:
            while done < len(view):
                done += self.file.write(view[done:])
        self.flushed += done

    def mark(self):
        self.flush()
        return self.flushed, self.digest.copy()

    def rollback(self, mark) -> None:
        self.buf.clear()
        self.flushed, self.digest = mark[0], mark[1].copy()
        self.file.truncate(self.flushed)
        self.file.seek(self.flushed)

    def finish(self) -> None:
        self.flush()
        self.file.close()


def write_shard(
    table: SampleTable,
    bounds: np.ndarray,
    shard: int,
    job: ShardJob,
    progress: Optional[MutableSequence[int]] = None,
    commit: bool = True,
) -> ShardResult:
    """Write shard ``shard`` of the plan; returns its size, hash and drops.

    ``progress`` (length ``2 * num_shards``) receives this shard's bytes
    written at ``[shard]`` and samples written at ``[num_shards + shard]``;
    one slot per shard, so workers never contend for a lock.  With
    ``commit=False`` the shard is left under its temporary name
    (``result.temp``) for :func:`commit_shard` to finish.
    """
    lo, hi = int(bounds[shard]), int(bounds[shard + 1])
    num_shards = len(bounds) - 1
    key_offsets = table.key_offsets[lo : hi + 1].tolist()
    base = key_offsets[0]
    key_blob = table.keys[base : key_offsets[-1]].tobytes()
    sample_members = table.sample_members[lo : hi + 1].tolist()
    m_lo, m_hi = sample_members[0], sample_members[-1]
    ext_ids = table.member_ext[m_lo:m_hi].tolist()
    sizes = table.member_size[m_lo:m_hi].tolist()
    mtimes = table.member_mtime_ns[m_lo:m_hi].tolist()
    header_sizes = np.asarray(table.member_header_size[m_lo:m_hi])
    kinds = None if table.member_kind is None else np.asarray(table.member_kind[m_lo:m_hi])
    kind_list = kinds.tolist() if kinds is not None and kinds.any() else None
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
    plain = header_sizes == BLOCK
    plain_slot = (np.cumsum(plain) - 1).tolist()
    plain_list = plain.tolist()
    plain_blob = memoryview(plain_headers([n for n, p in zip(names, plain_list) if p], [z for z, p in zip(sizes, plain_list) if p]))
    streamed = {i for i in range(hi - lo) if any(sizes[m] > _STREAM_MEMBER for m in range(sample_members[i] - m_lo, sample_members[i + 1] - m_lo))}
    name = job.names[shard]
    final = Path(job.dst) / name
    tmp = temp_path(final)
    result = ShardResult(shard=shard, num_bytes=0, sha256="")
    kept_members = np.ones(m_hi - m_lo, dtype=bool)
    try:
        out = _ShardFile(tmp)
    except OSError as exc:
        raise PackerError(f"{tmp}: cannot create shard: {exc.strerror}") from None
    try:
        for i in range(hi - lo):
            stem = stems[i]
            m, m_end = sample_members[i] - m_lo, sample_members[i + 1] - m_lo
            big = i in streamed
            mark = out.mark() if big else None
            sample_start = out.position
            rel = stem
            try:
                while m < m_end:
                    size = sizes[m]
                    if plain_list[m]:
                        slot = plain_slot[m] * BLOCK
                        header = plain_blob[slot : slot + BLOCK]
                    else:
                        header = member_header(names[m], size)
                    if kind_list is not None and kind_list[m] != MEMBER_FILE:
                        rel = stem.rsplit("/", 1)[0] if kind_list[m] == MEMBER_ROW else stem
                        rel, data = _generated_member(
                            kind_list[m], stem, table.extensions[ext_ids[m]], size, src_prefix, mtimes[m], job
                        )
                        out.buf += header
                        out.buf += data
                    else:
                        rel = stem + dot_ext_text[ext_ids[m]]
                        fd = _open_member(src_prefix + rel, size, mtimes[m])
                        try:
                            out.buf += header
                            if size > _STREAM_MEMBER:
                                out.flush()
                                _copy_stream(fd, size, out)
                            else:
                                out.buf += _read_small(fd, size)
                        finally:
                            os.close(fd)
                    if size % BLOCK:
                        out.buf += _ZERO_BLOCK[size % BLOCK :]
                    m += 1
            except _SourceProblem as problem:
                if mark is not None:
                    out.rollback(mark)
                else:
                    del out.buf[sample_start - out.flushed :]
                if job.on_error != "skip":
                    raise PackerError(
                        f"{src_prefix + rel}: {problem} (shard {name}, offset {sample_start})"
                    ) from None
                result.dropped.append(lo + i)
                result.skipped.append(Skipped(rel, str(problem)))
                kept_members[sample_members[i] - m_lo : m_end] = False
                continue
            if len(out.buf) >= _CHUNK or big:
                out.flush()
                if progress is not None:
                    progress[shard] = out.flushed
                    progress[num_shards + shard] = i + 1 - len(result.dropped)
        out.buf += END_OF_ARCHIVE
        out.finish()
        sizes_kept = np.asarray(sizes, dtype=np.int64)[kept_members]
        planned = int(header_sizes[kept_members].sum() + ((sizes_kept + BLOCK - 1) // BLOCK * BLOCK).sum()) + len(END_OF_ARCHIVE)
        if out.flushed != planned:
            raise PackerError(f"{final}: wrote {out.flushed} bytes but the plan says {planned} (internal error)")
    except BaseException as exc:
        if not out.file.closed:
            out.file.close()
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # the shard's own file: disk full, quota, I/O error
            raise PackerError(f"{final}: cannot write shard: {exc.strerror or exc}") from None
        raise
    if progress is not None:
        progress[shard] = out.flushed
        progress[num_shards + shard] = hi - lo - len(result.dropped)
    result.num_bytes = out.flushed
    result.sha256 = out.digest.hexdigest()
    result.temp = str(tmp)
    if commit:
        commit_shard(job, result)
    return result


def commit_shard(job: ShardJob, result: ShardResult) -> None:
    """Make a written shard final: flush it to disk (unless the build is
    not durable), rename it into place, and record it as finished, in that
    order, so that a crash at any point leaves either a temporary file
    (deleted on resume) or a complete shard."""
    tmp = result.temp
    assert tmp is not None, "commit_shard: shard already committed"
    final = Path(job.dst) / job.names[result.shard]
    try:
        if job.fsync:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(fd)  # flushes the file's data whichever descriptor wrote it
            finally:
                os.close(fd)
        os.replace(tmp, final)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PackerError(f"{final}: cannot write shard: {exc.strerror or exc}") from None
    result.temp = None
    record = {
        "shard": result.shard,
        "name": job.names[result.shard],
        "num_bytes": result.num_bytes,
        "sha256": result.sha256,
        "dropped": result.dropped,
        "skipped": [{"path": s.path, "reason": s.reason} for s in result.skipped],
    }
    try:
        save_shard_record(Path(job.dst), record)
    except OSError as exc:
        raise PackerError(f"{final}: written, but cannot record it as finished: {exc.strerror or exc}") from None


def _copy_stream(fd: int, size: int, out: _ShardFile) -> None:
    """Copy a large member in chunks; it must end exactly at ``size``."""
    remaining = size
    try:
        while remaining:
            chunk = os.read(fd, min(remaining, _CHUNK))
            if not chunk:
                raise _SourceProblem(_size_changed(size - remaining, size))
            out.write_through(chunk)
            remaining -= len(chunk)
        if os.read(fd, 1):
            raise _SourceProblem(_size_changed(size + 1, size))
    except OSError as exc:
        raise _SourceProblem(f"read failed: {exc.strerror}") from None


# ------------------------------------------------------------ parallel driver

_worker_state: Dict[str, object] = {}


def _job(dst: str, meta: dict) -> ShardJob:
    classes = meta.get("classes")
    return ShardJob(
        src=meta["source"],
        dst=dst,
        names=meta["shard_names"],
        on_error=meta["settings"]["on_error"],
        fsync=meta.get("fsync", True),
        classes={c: i for i, c in enumerate(classes)} if classes is not None else None,
    )


def _init_worker(dst: str, progress) -> None:
    _containers.clear()  # a forked worker must not serve its parent's containers
    table, bounds, meta = load_plan(Path(dst))
    _worker_state.update(table=table, bounds=bounds, job=_job(dst, meta), progress=progress)


def _run_in_worker(shard: int) -> ShardResult:
    s = _worker_state
    return write_shard(s["table"], s["bounds"], shard, s["job"], s["progress"], commit=False)  # type: ignore[arg-type]


def write_shards(
    dst: os.PathLike | str,
    shards: Sequence[int],
    *,
    workers: int,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> List[ShardResult]:
    """Write ``shards`` of the plan saved in ``dst`` with up to ``workers``
    processes.  The saved plan is the only input, in every process.

    ``on_progress(bytes_written, samples_written)`` is called as work
    proceeds.  With several workers, this process commits each written
    shard (:func:`commit_shard`) while the workers go on with the next
    ones.  On the first failure, shards not yet started are cancelled,
    those already written (or being written) are still committed, so that
    ``--resume`` keeps them, and the error is raised.  On Ctrl-C the
    workers are stopped at once.
    """
    dst = os.fspath(dst)
    table, bounds, meta = load_plan(Path(dst))
    num_shards = len(bounds) - 1
    job = _job(dst, meta)
    _containers.clear()
    workers = max(1, min(workers, len(shards)))
    if workers > 1:
        results = _write_in_processes(dst, shards, workers, num_shards, job, on_progress)
        return sorted(results, key=lambda r: r.shard)
    progress = np.zeros(2 * num_shards, dtype=np.int64)
    results = []
    for shard in shards:
        results.append(write_shard(table, bounds, shard, job, progress))
        if on_progress is not None:
            on_progress(int(progress[:num_shards].sum()), int(progress[num_shards:].sum()))
    return results


def _write_in_processes(
    dst: str,
    shards: Sequence[int],
    workers: int,
    num_shards: int,
    job: ShardJob,
    on_progress: Optional[Callable[[int, int], None]],
) -> List[ShardResult]:
    shared = process_context().Array("q", 2 * num_shards, lock=False)
    results: List[ShardResult] = []
    with worker_pool(workers, _init_worker, (dst, shared)) as (pool, check_interrupt):
        pending: set[Future] = {pool.submit(_run_in_worker, s) for s in shards}
        try:
            while pending:
                done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                failure = _commit_written(done, job, results)
                if failure is not None:
                    raise failure
                check_interrupt()
                if on_progress is not None:
                    counts = np.frombuffer(shared, dtype=np.int64)
                    on_progress(int(counts[:num_shards].sum()), int(counts[num_shards:].sum()))
        except Exception:
            pool.shutdown(wait=False, cancel_futures=True)  # the pool cancels what has not started
            while pending:  # the shards being written finish: keep them too
                wait(pending, timeout=POLL_SECONDS)
                # done(), not wait()'s answer: wait() never counts a future the
                # pool cancels at shutdown as done (it is not "notified").
                done = {f for f in pending if f.done()}
                pending -= done
                _commit_written(done, job, results)
                check_interrupt()
            raise
    return results


def _commit_written(futures: Iterable[Future], job: ShardJob, results: List[ShardResult]) -> Optional[BaseException]:
    """Commit every shard among ``futures`` that was written, adding it to
    ``results``; returns the first failure among them, if any."""
    failure: Optional[BaseException] = None
    for future in futures:
        if not future.done() or future.cancelled():
            continue
        error = future.exception()
        if error is None:
            result = future.result()
            try:
                commit_shard(job, result)
            except PackerError as exc:
                error = exc
            else:
                results.append(result)
        if error is not None and failure is None:
            failure = error
    return failure
