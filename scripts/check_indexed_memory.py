#!/usr/bin/env python3
"""Start-up time and worker memory of IndexedTarDataset on 1,000,000 samples.

Why this exists
---------------
``loaders.IndexedTarDataset`` keeps its index in memory-mapped numpy arrays
instead of per-sample Python objects.  Two promises follow, and both only
show on a dataset with many samples, so this script packs one (1,000,000
samples of 16 random bytes by default) and checks them:

(a) open: ``IndexedTarDataset(dst)`` takes under 0.5 s.  It is constructed
    in a new interpreter each time (after the dataset exists, so the page
    cache may hold its index: "cold-ish"), the imports are timed apart and
    excluded, and the best of ``--open-runs`` runs is compared with the
    bound.
(b) worker memory: a ``DataLoader`` with 2 workers reads one full epoch in
    ``ShardAwareSampler`` order (shuffled shards, shuffled within each
    shard), raw bytes (``decode=None``), with a collate function that drops
    the data.  Each worker reads its own resident set size (``VmRSS`` in
    ``/proc/self/status``) at its first item and after every batch, and
    sends it back with the batch.  No worker may grow by more than 50 MB
    from its first item to the largest value seen until its last batch.
    The epoch runs in a fresh interpreter too, so that the DataLoader's
    main process, and the workers forked from it, hold only what a training
    script would (not the heap left over from packing the dataset).

The source tree is written by ``packer.examples.make_blob_tree`` (10,000
files per folder, keys such as ``00012/00123456``), packed by
``packer.build(..., workers=2, fsync=False)`` into the work directory, then
deleted; only the packed dataset is kept while the checks run.  Creating
and deleting a million files is what takes time, so the source tree goes to
``/dev/shm`` (memory) when it has room for it (about 4 kB per file), which
is several times faster than a disk; ``--source-dir`` chooses another place.
A dataset already in ``--workdir`` with the requested number of samples is
reused.

How to read the output
----------------------
``make`` and ``pack`` lines give the seconds spent writing the source files
and packing them.  ``open`` lists every run's construction time; the PASS or
FAIL line compares the best with 0.5 s.  The worker table has one row per
DataLoader worker: its item count, ``VmRSS`` at its first item, at its last
batch and the largest seen, and the growth (largest minus first) split into
``RssAnon`` (private memory: what copy-on-read growth would show up as) and
``RssFile`` (pages of memory-mapped files, i.e. the index, which are shared
page cache, counted in every process that touches them).  The PASS or FAIL
line compares the largest ``VmRSS`` growth of any worker with 50 MB; the
line under it gives the largest private (``RssAnon``) growth.  A reader
that visits every sample maps nearly the whole index, about 52 bytes per
sample plus the keys (~58 MB at 1,000,000 samples of this tree), so
``RssFile`` growth alone comes close to the bound: compare ``anon`` when
judging copy-on-read growth.  Memory is in MB of 2**20 bytes, as the kernel
counts it.  The main process's ``VmRSS`` (and peak ``VmHWM``) after the
imports, before and after the epoch is printed for reference; it is not
bounded.  The exit status is 0 when the
script ran to the end, whether or not the bounds hold (it is a measurement),
and 1 when something failed (e.g. the epoch did not deliver every sample).

Usage::

    .venv/bin/python scripts/check_indexed_memory.py                   # 1,000,000 samples, a few minutes
    .venv/bin/python scripts/check_indexed_memory.py --samples 100000  # quick
    .venv/bin/python scripts/check_indexed_memory.py --workdir /tmp/idx1m --keep   # reuse on later runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OPEN_BOUND_S = 0.5
GROWTH_BOUND_MB = 50.0
DATASET_DIR = "packed"
BLOB_SIZE = 16
PER_DIR = 10_000
MB = 1024 * 1024  # RSS is reported in kB by the kernel; MB here is MiB

# Runs in a fresh interpreter: times the imports and the construction apart.
_OPEN_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from loaders import IndexedTarDataset
t1 = time.perf_counter()
dataset = IndexedTarDataset(sys.argv[1])
t2 = time.perf_counter()
n = len(dataset)
dataset[n - 1]
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_read_s": t3 - t2, "num_samples": n}))
"""
# The epoch also runs in a fresh interpreter, so that the DataLoader's main
# process (and the workers it forks) hold only what a training script would:
# not the heap left over from making and packing the dataset.
_EPOCH_CHILD = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import check_indexed_memory
sys.exit(check_indexed_memory.epoch_child(sys.argv[3:]))
"""
EXIT_BOUND_FAILED = 10


# ------------------------------------------------------------------ memory


def read_status(pid: str = "self") -> Dict[str, int]:
    """Memory fields of ``/proc/<pid>/status`` in kB (VmRSS, VmHWM, RssAnon, RssFile, RssShmem)."""
    wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    out: Dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in wanted:
                out[name] = int(rest.split()[0])
    return out


@dataclass
class WorkerMemory:
    """What one DataLoader worker saw of its own memory (kB)."""

    pid: int
    items: int = 0
    first: Dict[str, int] = field(default_factory=dict)
    last: Dict[str, int] = field(default_factory=dict)
    peak: Dict[str, int] = field(default_factory=dict)

    def update(self, items: int, first: Dict[str, int], now: Dict[str, int]) -> None:
        self.items = items
        self.first = first
        self.last = now
        for name, value in now.items():
            self.peak[name] = max(self.peak.get(name, value), value)

    def growth_mb(self, name: str) -> float:
        return (self.peak.get(name, 0) - self.first.get(name, 0)) / 1024


# Per-process probe state: each worker process has its own copy.
_PROBE: Dict[str, object] = {"items": 0, "first": None}


def probe_first_item(sample: dict) -> dict:
    """Dataset transform: records this process's memory at its first item."""
    if _PROBE["first"] is None:
        _PROBE["first"] = read_status()
    _PROBE["items"] = int(_PROBE["items"]) + 1  # type: ignore[call-overload]
    return sample


def probe_collate(batch: List[dict]) -> Tuple[int, int, int, Dict[str, int], Dict[str, int]]:
    """Collate that drops the data: (pid, batch size, items so far, memory at first item, memory now)."""
    nbytes = 0
    for sample in batch:
        for name, value in sample.items():
            if not name.startswith("__"):
                nbytes += len(value)
    now = read_status()
    first = _PROBE["first"] or now
    return os.getpid(), len(batch), int(_PROBE["items"]), first, now  # type: ignore[return-value]


# ----------------------------------------------------------------- dataset


def make_source(root: Path, samples: int) -> float:
    """Write ``samples`` tiny files under ``root``; returns seconds."""
    from packer.examples import make_blob_tree

    start = time.perf_counter()
    make_blob_tree(root, count=samples, size=BLOB_SIZE, per_dir=PER_DIR)
    return time.perf_counter() - start


def memory_available() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (0 if unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def source_parent(work: Path, samples: int, chosen: Optional[Path]) -> Path:
    """Where the source tree goes: ``chosen``, else /dev/shm with room to spare, else ``work``."""
    if chosen is not None:
        return chosen
    shm = Path("/dev/shm")
    need = 2 * samples * 4096  # a page per file on tmpfs, and twice that to spare
    try:
        room = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize
    except OSError:
        return work
    return shm if room > need and memory_available() > need else work


def pack(src: Path, dst: Path, workers: int) -> float:
    import packer

    start = time.perf_counter()
    packer.build(src, dst, packer.BuildOptions(workers=workers, quiet=True, fsync=False))
    return time.perf_counter() - start


def existing_samples(dst: Path) -> Optional[int]:
    try:
        return int(json.loads((dst / "index.json").read_text("utf-8"))["num_samples"])
    except (OSError, ValueError, KeyError):
        return None


def prepare_dataset(work: Path, samples: int, source_dir: Optional[Path], pack_workers: int) -> Tuple[Path, bool]:
    """The packed dataset under ``work``; (path, whether this run made it)."""
    dst = work / DATASET_DIR
    if existing_samples(dst) == samples:
        print(f"reusing {dst} ({samples:,} samples)")
        return dst, False
    if dst.exists():
        raise SystemExit(f"{dst} exists but is not a dataset of {samples:,} samples; remove it or choose another --workdir")
    parent = source_parent(work, samples, source_dir)
    parent.mkdir(parents=True, exist_ok=True)
    src = Path(tempfile.mkdtemp(prefix="indexed-memory-source-", dir=parent))
    try:
        seconds = make_source(src, samples)
        print(f"make: {samples:,} files of {BLOB_SIZE} bytes in {src} in {seconds:.1f} s ({samples / seconds:,.0f} files/s)", flush=True)
        seconds = pack(src, dst, pack_workers)
        size = sum(p.stat().st_size for p in dst.glob("*.tar"))
        shards = len(list(dst.glob("*.tar")))
        print(f"pack: {seconds:.1f} s ({samples / seconds:,.0f} samples/s, workers {pack_workers}) -> {shards} shards, {size / 1e9:.2f} GB", flush=True)
    finally:
        start = time.perf_counter()
        shutil.rmtree(src, ignore_errors=True)
        print(f"removed the source tree in {time.perf_counter() - start:.1f} s", flush=True)
    return dst, True


# -------------------------------------------------------------- the checks


def time_open(dst: Path, runs: int) -> List[Dict[str, float]]:
    """Construct the dataset in ``runs`` fresh interpreters; each run's timings."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    results = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", _OPEN_CHILD, str(dst)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"open run failed:\n{proc.stderr}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def report_open(results: Sequence[Dict[str, float]]) -> bool:
    opens = [r["open_s"] for r in results]
    print(f"open runs (s): {', '.join(f'{s:.4f}' for s in opens)}")
    best = min(results, key=lambda r: r["open_s"])
    print(f"  best run: import loaders {best['import_s']:.2f} s (excluded), IndexedTarDataset(dst) {best['open_s'] * 1000:.1f} ms, "
          f"first read {best['first_read_s'] * 1000:.1f} ms, {int(best['num_samples']):,} samples")
    ok = best["open_s"] < OPEN_BOUND_S
    print(f"{'PASS' if ok else 'FAIL'} (a) open: {best['open_s'] * 1000:.1f} ms best of {len(opens)} (bound {OPEN_BOUND_S * 1000:.0f} ms)")
    return ok


def read_epoch(dst: Path, workers: int, batch_size: int, seed: int) -> Tuple[Dict[int, WorkerMemory], int, float, Dict[str, Dict[str, int]]]:
    """One epoch in ShardAwareSampler order: per-worker memory, items,
    seconds, and the main process's memory after imports, before and after
    the epoch."""
    from torch.utils.data import DataLoader

    from loaders import IndexedTarDataset, ShardAwareSampler

    main = {"after imports": read_status()}
    dataset = IndexedTarDataset(dst, decode=None, transform=probe_first_item)
    sampler = ShardAwareSampler(dataset, seed=seed, rank=0, world_size=1)
    loader = DataLoader(dataset, sampler=sampler, batch_size=batch_size, num_workers=workers, collate_fn=probe_collate)
    main["before the epoch"] = read_status()
    memory: Dict[int, WorkerMemory] = {}
    items = 0
    start = time.perf_counter()
    for pid, n, worker_items, first, now in loader:
        items += n
        memory.setdefault(pid, WorkerMemory(pid)).update(worker_items, first, now)
    seconds = time.perf_counter() - start
    main["after the epoch"] = read_status()
    if len(dataset) != items:
        raise RuntimeError(f"the epoch delivered {items:,} samples, the dataset has {len(dataset):,}")
    return memory, items, seconds, main


def report_memory(dst: Path, memory: Dict[int, WorkerMemory], items: int, seconds: float, main: Dict[str, Dict[str, int]]) -> bool:
    print(f"epoch: {items:,} samples in {seconds:.1f} s ({items / seconds:,.0f} samples/s), {len(memory)} workers")
    print(f"{'worker pid':>10} {'items':>10} {'VmRSS first':>12} {'last':>8} {'max':>8} {'growth':>8} {'anon':>8} {'file':>8}   (MB)")
    for w in sorted(memory.values(), key=lambda w: w.pid):
        print(f"{w.pid:>10} {w.items:>10,} {w.first['VmRSS'] / 1024:>12.1f} {w.last['VmRSS'] / 1024:>8.1f} {w.peak['VmRSS'] / 1024:>8.1f} "
              f"{w.growth_mb('VmRSS'):>8.1f} {w.growth_mb('RssAnon'):>8.1f} {w.growth_mb('RssFile'):>8.1f}")
    for when, status in main.items():
        print(f"main process {when}: VmRSS {status['VmRSS'] / 1024:.1f} MB (anon {status.get('RssAnon', 0) / 1024:.1f}, "
              f"file {status.get('RssFile', 0) / 1024:.1f}), peak VmHWM {status['VmHWM'] / 1024:.1f} MB")
    if not memory:
        print("FAIL (b) worker memory: no worker reported")
        return False
    worst = max(memory.values(), key=lambda w: w.growth_mb("VmRSS"))
    ok = worst.growth_mb("VmRSS") <= GROWTH_BOUND_MB
    print(f"{'PASS' if ok else 'FAIL'} (b) worker memory: largest VmRSS growth {worst.growth_mb('VmRSS'):.1f} MB "
          f"(worker {worst.pid}, anon {worst.growth_mb('RssAnon'):+.1f} MB, file {worst.growth_mb('RssFile'):+.1f} MB) (bound {GROWTH_BOUND_MB:.0f} MB)")
    anon = max(w.growth_mb("RssAnon") for w in memory.values())
    print(f"  for reference: largest private (RssAnon) growth {anon:.1f} MB; RssFile growth is pages of the memory-mapped "
          f"index (its files total {index_mb(dst):.0f} MB), shared page cache")
    return ok


def index_mb(dst: Path) -> float:
    return sum(p.stat().st_size for p in (dst / "index").glob("*.npy")) / MB


def epoch_child(argv: Sequence[str]) -> int:
    """Entry point of the fresh interpreter that reads the epoch."""
    dst, workers, batch_size, seed = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    ok = report_memory(dst, *read_epoch(dst, workers, batch_size, seed))
    return 0 if ok else EXIT_BOUND_FAILED


def run_epoch(dst: Path, workers: int, batch_size: int, seed: int) -> bool:
    """Run :func:`epoch_child` in a fresh interpreter (it prints its report)."""
    sys.stdout.flush()
    proc = subprocess.run([sys.executable, "-c", _EPOCH_CHILD, str(Path(__file__).resolve().parent), str(REPO),
                           str(dst), str(workers), str(batch_size), str(seed)])
    if proc.returncode not in (0, EXIT_BOUND_FAILED):
        raise RuntimeError(f"the epoch process failed (exit status {proc.returncode})")
    return proc.returncode == 0


# -------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring (top of this file) for how to read the output.")
    parser.add_argument("--samples", type=int, default=1_000_000, help="number of samples in the dataset (default: 1000000)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="work directory; the dataset is DIR/packed and is reused when it already has --samples samples "
                             "(default: a new temp dir under $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the packed dataset at the end (default: remove what this run made)")
    parser.add_argument("--source-dir", type=Path, default=None,
                        help="directory in which the source tree is made, then deleted after packing "
                             "(default: /dev/shm when it and memory have room for about 8 kB per sample, else the work directory)")
    parser.add_argument("--pack-workers", type=int, default=2, help="packer.build workers (default: 2)")
    parser.add_argument("--open-runs", type=int, default=5, help="fresh interpreters constructing the dataset; the best counts (default: 5)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the epoch (default: 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="DataLoader batch size; one memory sample per batch (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="ShardAwareSampler seed (default: 0)")
    args = parser.parse_args(argv)
    for name in ("samples", "pack_workers", "open_runs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1 (the bound is about DataLoader worker processes)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not os.path.exists("/proc/self/status"):
        print("this check reads /proc/<pid>/status and needs Linux", file=sys.stderr)
        return 1
    made_work = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="indexed-memory-")) if made_work else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    made_dataset = False
    total_start = time.perf_counter()
    try:
        dst, made_dataset = prepare_dataset(work, args.samples, args.source_dir, args.pack_workers)
        print(f"dataset: {dst}")
        open_ok = report_open(time_open(dst, args.open_runs))
        memory_ok = run_epoch(dst, args.workers, args.batch_size, args.seed)
        print(f"summary: (a) open {'PASS' if open_ok else 'FAIL'}, (b) worker memory {'PASS' if memory_ok else 'FAIL'}; "
              f"total {time.perf_counter() - total_start:.0f} s")
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work / DATASET_DIR}")
        elif made_work:
            shutil.rmtree(work, ignore_errors=True)
        elif made_dataset:
            shutil.rmtree(work / DATASET_DIR, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
