"""Worker process pools that stop cleanly on Ctrl-C.

A terminal's Ctrl-C sends SIGINT to every process of the foreground group.
Two things could then hang a build:

* a worker interrupted while holding the lock of the pool's result queue
  leaves the other workers waiting for it forever, so workers ignore
  SIGINT and leave it to the parent (they are started with SIGINT ignored,
  so that a spawned worker is never without protection);
* in the parent, a ``KeyboardInterrupt`` raised wherever the main thread
  happens to be can land just after it took a lock of
  ``concurrent.futures`` (waiting on futures takes several), which is then
  never released, and the pool's own thread blocks on it.  So while a pool
  runs, Ctrl-C is only recorded, and raised at the points where the main
  thread checks for it (``check()``), which hold no lock.

On Ctrl-C the parent terminates the workers (:func:`stop_workers`) instead
of waiting for them: whatever they were writing stays under a temporary
name, which ``--resume`` deletes.  After another error the parent waits for
the running tasks, but a Ctrl-C then still stops them at once.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Tuple

POLL_SECONDS = 0.2  # how often a waiting parent checks for Ctrl-C


def process_context() -> multiprocessing.context.BaseContext:
    """fork where it is safe and fast (Linux; the parent holds no threads
    then), spawn elsewhere."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


@contextmanager
def worker_pool(
    workers: int, initializer: Optional[Callable[..., None]] = None, initargs: Sequence[Any] = ()
) -> Iterator[Tuple[ProcessPoolExecutor, Callable[[], None]]]:
    """``(pool, check)``: a process pool whose workers ignore Ctrl-C, and a
    function that raises ``KeyboardInterrupt`` if Ctrl-C was pressed since.
    On ``KeyboardInterrupt`` the workers are terminated; on another error,
    tasks not started are cancelled and the running ones waited for (a
    Ctrl-C meanwhile terminates them)."""
    with deferred_interrupts() as check:
        pool = ProcessPoolExecutor(workers, mp_context=process_context(), initializer=_start_worker,
                                   initargs=(initializer, tuple(initargs)))
        processes = getattr(pool, "_processes", None)  # not public API: {pid: Process}, filled at launch
        try:
            _launch(pool, workers)
            yield pool, check
        except KeyboardInterrupt:
            stop_workers(pool, processes)
            raise
        except BaseException:
            finish_after_error(pool, processes, check)
            raise
        pool.shutdown(wait=True)


def finish_after_error(pool: ProcessPoolExecutor, processes: Optional[dict], check: Callable[[], None]) -> None:
    """Cancel the tasks not started and wait for the running ones, checking
    for Ctrl-C, which terminates them.  Only the pool's own thread cancels
    (``cancel_futures``): Python 3.11's pool reports futures cancelled from
    outside as an error if a worker then dies."""
    pool.shutdown(wait=False, cancel_futures=True)
    try:
        while processes and any(p.is_alive() for p in list(processes.values())):
            multiprocessing.connection.wait([p.sentinel for p in list(processes.values())], timeout=POLL_SECONDS)
            check()
    except KeyboardInterrupt:
        stop_workers(pool, processes)
        raise
    pool.shutdown(wait=True)


def results_in_order(futures: Iterable[Future], check: Callable[[], None]) -> Iterator[Any]:
    """Each future's result in turn, checking for Ctrl-C while waiting."""
    for future in futures:
        while not future.done():  # (a future the pool cancels at shutdown never counts as done for wait())
            wait([future], timeout=POLL_SECONDS)
            check()
        check()
        yield future.result()


def stop_workers(pool: ProcessPoolExecutor, processes: Optional[dict]) -> None:
    """Terminate the pool's workers now (on Ctrl-C: waiting for them could
    take a whole shard).  Tasks not started fail with BrokenProcessPool;
    they are not cancelled first, which Python 3.11's pool reports as an
    error once its workers are gone."""
    for process in list((processes or {}).values()):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True)


def _launch(pool: ProcessPoolExecutor, workers: int) -> None:
    """Start the workers now, with SIGINT ignored: a spawned worker would
    otherwise take a Ctrl-C as a KeyboardInterrupt until its initializer
    runs (the ignored disposition survives exec, and Python keeps it)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread: nothing to protect here
        restore = False
    else:
        restore = True
    try:
        for _ in range(workers):  # fork starts all at the first task, spawn one per task
            pool.submit(_nothing)
    finally:
        if restore:
            signal.signal(signal.SIGINT, _settable(previous))


def _nothing() -> None:
    pass


def _start_worker(initializer: Optional[Callable[..., None]], initargs: Sequence[Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def deferred_interrupts() -> Iterator[Callable[[], None]]:
    """Within the block, Ctrl-C is recorded; the yielded ``check()`` raises
    it (``KeyboardInterrupt``, or whatever the previous handler does), and
    so does leaving the block.  Outside the main thread, or where the
    handler cannot be set, Ctrl-C behaves as usual and ``check`` does
    nothing."""
    hits = []

    def record(signum: int, frame: Any) -> None:
        hits.append(signum)

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    try:
        previous = signal.signal(signal.SIGINT, record)
    except (ValueError, OSError):
        yield lambda: None
        return

    def check() -> None:
        if hits:
            hits.clear()
            _deliver(previous)

    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, _settable(previous))
    check()


def _settable(handler: Any) -> Any:
    """``handler`` as ``signal.signal`` accepts it (a handler installed
    outside Python reads as None: restore the default then)."""
    return signal.SIG_DFL if handler is None else handler


def _deliver(handler: Any) -> None:
    """Act on a recorded SIGINT as ``handler`` would have."""
    if handler is signal.SIG_IGN:
        return
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, None)
        return
    raise KeyboardInterrupt
