#!/usr/bin/env python3
"""Random access in shuffled order: IndexedTarDataset vs wids, in one run.

Why this exists
---------------
``loaders.IndexedTarDataset`` aims to read samples in a shuffled order at
least 3x as fast as ``wids.ShardListDataset`` (webdataset's random-access
reader) reading the same tar files.  Shared machines are noisy, so absolute
rates from different runs cannot be compared: this script packs each
synthetic dataset once with ``packer.build`` and times both readers on the
same shards, in the same run, round-robin, and reports the ratio.

Datasets (``--scale`` multiplies the sample counts):

* ``jpeg40k``: 8,000 samples of a ~40 kB JPEG + a small JSON (~340 MB);
* ``bin1k``: 100,000 single-file samples of 1,000 bytes (~150 MB of tar).

Both are packed into shards of ``--shard-size`` (default 32 MB).  Our loader
reads the packed directory (binary index, one ``os.pread`` per sample).
wids reads the same tar files through the packed directory's ``wids.json``
(its relative urls are checked to resolve to those files; if they did not,
a descriptor with absolute paths would be written and used instead), with
``cache_dir`` set to the packed directory so that wids opens the tars in
place instead of copying them into ``/tmp/_wids_cache``, with
``transformations=[]`` (no decoding: wids then returns every member as an
``io.BytesIO`` over the member's bytes, keyed ``.ext``), and with an LRU of
open shards as large as the number of shards (``--wids-lru``), so that a
shuffled order never makes it close and re-index a shard.

Before timing, a few indices are read with both and must give the same key
and the same bytes for every member; and every timing checks that the total
number of bytes delivered equals the other methods'.

A third method, ``reads``, is a reference rather than a reader: one
``os.pread`` per member at offsets looked up beforehand in per-sample Python
lists, nothing else (``ReadsAlone``).  Any reader that hands out each member
as ``bytes`` read with ``pread`` is slower than that, so its rate over
wids' is the ceiling of what ratio such a reader can show here.  On 40 kB samples
most of a sample's cost is copying its bytes out of the page cache, which
no reader avoids, and that ceiling is near or below 3x.

What is timed, per (dataset, DataLoader workers, method), ``--repeat`` times
round-robin (best kept), each time after reading every shard once so that
the page cache is equally warm:

* open: constructing the dataset and reading one sample of every shard.
  Ours memory-maps its index and opens the tars; wids reads the descriptor
  and, at the first access to each shard, scans all of that tar's headers
  to build an in-memory index (kept only while the shard stays in its LRU;
  wids does not save it).
* read: a ``DataLoader`` over the opened dataset (workers fork from the
  process that opened it, so they inherit the open shards) with a sampler
  that is a fixed list of indices, the same for both methods: one or more
  random permutations of the whole dataset (``--order random``) or
  ``ShardAwareSampler``-style orders (``--order shard``).  ``--batch-size``
  samples per batch, collated into just (count, bytes) so that no data
  crosses process boundaries.  The rate counts the samples after the first
  batch over the time from the first batch to the last, so worker start-up
  is left out.  The number of passes over the dataset is chosen so that our
  loader's timing lasts at least ``--min-seconds``.
* workers ``none``: the same order read by a plain loop ``dataset[i]`` in
  this process, without a DataLoader, whose own per-sample cost (sampler,
  batching, fetch loop; a few microseconds) is paid equally by both methods
  and so pulls the DataLoader ratios towards 1.

How to read the output
----------------------
One table row per (dataset, workers, method): best open time, read rate in
samples/s and MB/s (member bytes, 1 MB = 10**6 bytes) and, on the rows of
ours and of the reads alone, their read rate over wids' (above 1.00x:
faster than wids).  Then one goal line per (dataset, workers): ``ours vs
wids: X.XXx (goal >= 3x)``, with the ceiling ``reads alone vs wids``.
The read ratio is the one that matters; open is reported because it is a
real cost of wids in every process that opens the shards.  ``--json PATH``
saves every timing.  The exit status is 0 whether or not the goal is met
(it is a measurement) and 1 if the two readers disagree on the data.

Usage::

    .venv/bin/python scripts/bench_indexed.py                  # default sizes, a few minutes on 2 cores
    .venv/bin/python scripts/bench_indexed.py --scale 0.1 --repeat 1 --min-seconds 0.2   # smoke run
    .venv/bin/python scripts/bench_indexed.py --json bench-results/indexed.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the loaders of this checkout

GOAL = 3.0
OURS, WIDS, FLOOR = "ours", "wids", "reads"
METHODS = (OURS, WIDS, FLOOR)
IMAGE_SAMPLES, IMAGE_CLASSES, IMAGE_SIDE = 8_000, 10, 208  # side 208: ~40 kB noise JPEGs
BLOB_SAMPLES, BLOB_SIZE, BLOB_PER_DIR = 100_000, 1_000, 1_000
DATASET_NAMES = ("jpeg40k", "bin1k")


# ------------------------------------------------------------------ datasets


@dataclass
class Packed:
    """A packed dataset and what wids reads it through."""

    name: str
    description: str
    root: Path
    samples: int
    shards: int
    tar_bytes: int
    wids_descriptor: str = ""
    wids_note: str = ""
    firsts: List[int] = field(default_factory=list)  # one sample index per shard

    def tar_paths(self) -> List[Path]:
        return sorted(self.root.glob("*.tar"))


def make_source(name: str, src: Path, scale: float) -> Tuple[int, str]:
    """Write dataset ``name``'s source tree; (samples, description)."""
    from packer.examples import make_blob_tree, make_image_tree

    if name == "jpeg40k":
        per_class = max(1, round(IMAGE_SAMPLES * scale / IMAGE_CLASSES))
        n = make_image_tree(src, classes=IMAGE_CLASSES, per_class=per_class, side=IMAGE_SIDE, seed=0, awkward=False, distinct_images=64)
        jpegs = list(src.rglob("*.jpg"))
        mean = sum(p.stat().st_size for p in jpegs) / max(1, len(jpegs))
        return n, f"{n:,} samples of a JPEG (mean {mean / 1000:.1f} kB) + small JSON"
    if name == "bin1k":
        n = make_blob_tree(src, count=max(1, round(BLOB_SAMPLES * scale)), size=BLOB_SIZE, per_dir=BLOB_PER_DIR, seed=0)
        return n, f"{n:,} single-file samples of {BLOB_SIZE} bytes"
    raise ValueError(f"unknown dataset {name!r}")


def prepare(name: str, work: Path, scale: float, shard_size: int, pack_workers: int) -> Packed:
    """Make the source tree, pack it, delete the source; print the times."""
    import packer

    src, dst = work / f"{name}-src", work / name
    start = time.perf_counter()
    samples, description = make_source(name, src, scale)
    made = time.perf_counter() - start
    start = time.perf_counter()
    packer.build(src, dst, packer.BuildOptions(shard_size=shard_size, workers=pack_workers, quiet=True, fsync=False))
    packed_s = time.perf_counter() - start
    shutil.rmtree(src, ignore_errors=True)
    tars = sorted(dst.glob("*.tar"))
    size = sum(p.stat().st_size for p in tars)
    print(f"{name}: {description}; made in {made:.1f} s, packed in {packed_s:.1f} s into {len(tars)} shards, {size / 1e6:.0f} MB")
    return Packed(name, description, dst, samples, len(tars), size)


def wids_descriptor(packed: Packed, scratch: Path) -> Tuple[str, str]:
    """A wids descriptor naming the packed tars: the packed ``wids.json`` if
    wids resolves its relative urls to them, else one with absolute paths."""
    own = packed.root / "wids.json"
    dataset = open_wids(str(own), packed.root, lru=1)
    urls = [shard["url"] for shard in dataset.shards]
    dataset.close()
    tars = packed.tar_paths()
    if len(urls) == len(tars) and all(os.path.exists(u) and os.path.samefile(u, t) for u, t in zip(urls, tars)):
        return str(own), f"wids.json: relative urls resolve to the packed tars (e.g. {urls[0]})"
    spec = json.loads(own.read_text("utf-8"))
    for shard in spec["shardlist"]:
        shard["url"] = str((packed.root / shard["url"]).resolve())
    path = scratch / f"{packed.name}-wids-absolute.json"
    path.write_text(json.dumps(spec), "utf-8")
    return str(path), f"wids.json relative urls resolved to {urls[:1]}, not the packed tars: using {path} with absolute paths"


def warm_cache(paths: Iterable[Path]) -> int:
    """Read every file once, so that all methods start from a warm page cache."""
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(8 << 20):
                total += len(chunk)
    return total


# ------------------------------------------------------------------- readers


def open_ours(packed: Packed) -> Any:
    from loaders import IndexedTarDataset

    return IndexedTarDataset(packed.root, decode=None)


def open_wids(descriptor: str, cache_dir: Path, lru: int) -> Any:
    import wids

    # wids prints a summary line to stderr on every construction.
    with contextlib.redirect_stderr(io.StringIO()):
        return wids.ShardListDataset(descriptor, cache_dir=str(cache_dir), lru_size=lru, transformations=[])


class ReadsAlone:
    """The reads alone, as a reference: ``os.pread`` of every member at
    offsets looked up beforehand in per-sample Python lists, returning
    ``{ext: bytes}`` with no key, no checks, no index arrays.  No reader that
    returns each member as ``bytes`` read with ``pread`` can be faster, so
    its rate divided by wids' is the highest ratio such a reader can
    show on this machine.  (The per-sample lists are what a real loader must
    not keep: see "Per-sample data" in docs/architecture.md.)"""

    def __init__(self, root: Path) -> None:
        from loaders import IndexedTarDataset

        index = IndexedTarDataset(root).index
        names = list(index.extensions)
        shard = np.asarray(index.sample_shard).tolist()
        bounds = np.asarray(index.sample_members).tolist()
        reads = list(zip([names[e] for e in np.asarray(index.member_ext).tolist()],
                         np.asarray(index.member_offset).tolist(), np.asarray(index.member_size).tolist()))
        self.plan = [(shard[i], reads[bounds[i] : bounds[i + 1]]) for i in range(index.num_samples)]
        self.paths = list(index.shard_paths)
        self.fds: Dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Dict[str, bytes]:
        shard, reads = self.plan[i]
        fd = self.fds.get(shard)
        if fd is None:
            fd = self.fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return {name: os.pread(fd, size, offset) for name, offset, size in reads}

    def __getitems__(self, indices: List[int]) -> List[Dict[str, bytes]]:
        plan, fds, pread = self.plan, self.fds, os.pread
        batch = []
        for i in indices:
            shard, reads = plan[i]
            fd = fds.get(shard)
            if fd is None:
                fd = fds[shard] = os.open(self.paths[shard], os.O_RDONLY)
            batch.append({name: pread(fd, size, offset) for name, offset, size in reads})
        return batch

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def opener(method: str, packed: Packed, lru: int) -> Callable[[], Any]:
    if method == OURS:
        return lambda: open_ours(packed)
    if method == FLOOR:
        return lambda: ReadsAlone(packed.root)
    return lambda: open_wids(packed.wids_descriptor, packed.root, lru)


def shard_firsts(dataset: Any) -> List[int]:
    """One sample index per shard (the first) of our dataset."""
    counts = np.bincount(np.asarray(dataset.index.sample_shard, dtype=np.int64))
    return [int(x) for x in np.concatenate([[0], np.cumsum(counts)[:-1]])]


def members(sample: Dict[str, Any]) -> Dict[str, bytes]:
    """Raw bytes of every member, keyed by extension without a leading dot."""
    out = {}
    for name, value in sample.items():
        if name.startswith("__"):
            continue
        out[name.lstrip(".")] = value.getvalue() if isinstance(value, io.BytesIO) else bytes(value)
    return out


def count_bytes(batch: List[Dict[str, Any]]) -> Tuple[int, int]:
    """Collate that drops the data: (samples, member bytes)."""
    nbytes = 0
    for sample in batch:
        for name, value in sample.items():
            if not name.startswith("__"):
                nbytes += len(value.getvalue()) if isinstance(value, io.BytesIO) else len(value)
    return len(batch), nbytes


def verify_same(ours: Any, theirs: Any, indices: Sequence[int]) -> None:
    """Both readers give the same key and member bytes at every index."""
    if len(ours) != len(theirs):
        raise AssertionError(f"ours has {len(ours)} samples, wids {len(theirs)}")
    for i in indices:
        a, b = ours[i], theirs[i]
        if a["__key__"] != b["__key__"]:
            raise AssertionError(f"index {i}: key {a['__key__']!r} (ours) vs {b['__key__']!r} (wids)")
        if members(a) != members(b):
            raise AssertionError(f"index {i} ({a['__key__']}): members differ: {sorted(members(a))} vs {sorted(members(b))}")


# -------------------------------------------------------------------- timing


@dataclass
class Timing:
    """One method's best timings for one (dataset, workers)."""

    dataset: str
    workers: Optional[int]  # None: plain loop, no DataLoader
    method: str
    open_s: float = math.inf
    read_s: float = math.inf
    samples: int = 0
    nbytes: int = 0
    epoch_s: float = math.inf  # whole iteration, worker start-up included
    runs: int = 0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.read_s if self.read_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.read_s if self.read_s > 0 else 0.0


def read_loop(dataset: Any, order: List[int]) -> Tuple[float, int, int, float, int]:
    """``dataset[i]`` for every ``i`` of ``order``, counted like a batch of one."""
    nbytes = 0
    start = time.perf_counter()
    for i in order:
        nbytes += count_bytes([dataset[i]])[1]
    seconds = time.perf_counter() - start
    return seconds, len(order), nbytes, seconds, nbytes


def read_order(dataset: Any, order: List[int], workers: Optional[int], batch_size: int) -> Tuple[float, int, int, float, int]:
    """Iterate a DataLoader over ``order`` (a plain loop if ``workers`` is
    None): (steady seconds, steady samples, steady bytes, whole seconds,
    total bytes)."""
    from torch.utils.data import DataLoader

    if workers is None:
        return read_loop(dataset, order)
    loader = DataLoader(dataset, sampler=order, batch_size=batch_size, num_workers=workers, collate_fn=count_bytes)
    start = time.perf_counter()
    first_at, steady_n, steady_bytes, total_bytes = 0.0, 0, 0, 0
    for k, (n, nbytes) in enumerate(loader):
        total_bytes += nbytes
        if k == 0:
            first_at = time.perf_counter()
        else:
            steady_n += n
            steady_bytes += nbytes
    end = time.perf_counter()
    if steady_n == 0:  # a single batch: fall back to the whole iteration
        return end - start, len(order), total_bytes, end - start, total_bytes
    return end - first_at, steady_n, steady_bytes, end - start, total_bytes


def run_once(open_dataset: Callable[[], Any], packed: Packed, order: List[int], workers: Optional[int], batch_size: int) -> Dict[str, float]:
    warm_cache(packed.tar_paths())
    start = time.perf_counter()
    dataset = open_dataset()
    for i in packed.firsts:
        dataset[i]
    open_s = time.perf_counter() - start
    read_s, n, nbytes, epoch_s, total_bytes = read_order(dataset, order, workers, batch_size)
    dataset.close()
    return {"open_s": open_s, "read_s": read_s, "samples": n, "nbytes": nbytes, "epoch_s": epoch_s, "total_bytes": total_bytes}



def make_order(dataset: Any, passes: int, kind: str, seed: int) -> List[int]:
    """``passes`` shuffled orders of the whole dataset, concatenated."""
    from loaders import ShardAwareSampler

    n = len(dataset)
    if kind == "shard":
        sampler = ShardAwareSampler(dataset, seed=seed, rank=0, world_size=1)
        parts = []
        for epoch in range(passes):
            sampler.set_epoch(epoch)
            parts.append(sampler.indices())
    else:
        rng = np.random.default_rng(seed)
        parts = [rng.permutation(n) for _ in range(passes)]
    return np.concatenate(parts).tolist()


def calibrate_passes(packed: Packed, workers: Optional[int], args: argparse.Namespace) -> int:
    """Passes over the dataset for our loader's timing to last ``--min-seconds``."""
    order = make_order(open_ours(packed), 1, args.order, args.seed)
    result = run_once(opener(OURS, packed, 0), packed, order, workers, args.batch_size)
    per_pass = result["epoch_s"]
    return max(1, min(args.max_passes, math.ceil(1.25 * args.min_seconds / max(per_pass, 1e-6))))


def bench(packed: Packed, workers: Optional[int], args: argparse.Namespace) -> Dict[str, Timing]:
    passes = calibrate_passes(packed, workers, args)
    order = make_order(open_ours(packed), passes, args.order, args.seed)
    lru = args.wids_lru or packed.shards
    timings = {m: Timing(packed.name, workers, m) for m in METHODS}
    for r in range(args.repeat):
        rotated = METHODS[r % len(METHODS):] + METHODS[: r % len(METHODS)]
        totals = {}
        for method in rotated:
            result = run_once(opener(method, packed, lru), packed, order, workers, args.batch_size)
            totals[method] = result["total_bytes"]
            t = timings[method]
            t.runs += 1
            t.open_s = min(t.open_s, result["open_s"])
            t.epoch_s = min(t.epoch_s, result["epoch_s"])
            if result["read_s"] < t.read_s:
                t.read_s, t.samples, t.nbytes = result["read_s"], int(result["samples"]), int(result["nbytes"])
        if len(set(totals.values())) != 1:
            raise AssertionError(f"{packed.name}, workers {label(workers)}: bytes delivered differ: {totals}")
    print(f"  {packed.name}, workers {label(workers)}: {passes} pass(es), {len(order):,} reads per timing, "
          + ", ".join(f"{m} {timings[m].samples_per_s:,.0f}/s" for m in METHODS))
    return timings


# ------------------------------------------------------------------- report


def label(workers: Optional[int]) -> str:
    return "none" if workers is None else str(workers)


def ratio(timings: Dict[str, Timing], method: str = OURS) -> float:
    """``method``'s read rate over wids'."""
    theirs = timings[WIDS].samples_per_s
    return timings[method].samples_per_s / theirs if theirs > 0 else math.inf


def print_table(results: Dict[Tuple[str, Optional[int]], Dict[str, Timing]]) -> None:
    print()
    print("workers: DataLoader num_workers; none: a plain loop over dataset[i], no DataLoader")
    print(f"{'dataset':<9} {'workers':>7} {'method':<6} {'open s':>8} {'read samples/s':>15} {'MB/s':>8} {'vs wids':>10}")
    for (name, workers), timings in results.items():
        for method in METHODS:
            t = timings[method]
            r = "" if method == WIDS else f"{ratio(timings, method):.2f}x"
            print(f"{name:<9} {label(workers):>7} {method:<6} {t.open_s:>8.3f} {t.samples_per_s:>15,.0f} {t.mb_per_s:>8.1f} {r:>10}")
    print()
    for (name, workers), timings in results.items():
        value = ratio(timings)
        verdict = "met" if value >= GOAL else "NOT met"
        open_ratio = timings[WIDS].open_s / timings[OURS].open_s if timings[OURS].open_s > 0 else math.inf
        print(f"{name}, workers {label(workers)}: ours vs wids: {value:.2f}x (goal >= {GOAL:g}x) {verdict}; "
              f"reads alone vs wids: {ratio(timings, FLOOR):.2f}x; open: wids takes {open_ratio:.0f}x as long")


def save_json(path: Path, args: argparse.Namespace, datasets: Sequence[Packed], results: Dict[Tuple[str, Optional[int]], Dict[str, Timing]]) -> None:
    import torch
    import wids

    rows = []
    for (name, workers), timings in results.items():
        for method in METHODS:
            t = timings[method]
            rows.append(dict(asdict(t), samples_per_s=t.samples_per_s, mb_per_s=t.mb_per_s, ratio_to_wids=None if method == WIDS else ratio(timings, method)))
    record = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "wids": getattr(wids, "__version__", "?")},
        "datasets": [{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(d).items()} for d in datasets],
        "goal": GOAL,
        "results": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n", "utf-8")
    print(f"saved {path}")


# --------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from packer.units import parse_size

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring (top of this file) for what is timed and how to read the output.")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sample counts (8,000 JPEG+JSON, 100,000 x 1 kB) (default: 1.0)")
    parser.add_argument("--datasets", default=",".join(DATASET_NAMES), help=f"comma-separated subset of {', '.join(DATASET_NAMES)} (default: all)")
    parser.add_argument("--workers", default="none,0,2",
                        help="comma-separated DataLoader num_workers values; 'none': a plain loop over dataset[i] without a DataLoader (default: none,0,2)")
    parser.add_argument("--repeat", type=int, default=3, help="timings per method, round-robin; the best is kept (default: 3)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="shortest timing of our loader; sets the passes over the dataset (default: 1.0)")
    parser.add_argument("--max-passes", type=int, default=50, help="upper limit on passes over the dataset per timing (default: 50)")
    parser.add_argument("--batch-size", type=int, default=256, help="DataLoader batch size (default: 256)")
    parser.add_argument("--order", choices=("random", "shard"), default="random",
                        help="random: permutations of all samples; shard: shuffled shards, shuffled within each (ShardAwareSampler's order) (default: random)")
    parser.add_argument("--shard-size", type=parse_size, default=parse_size("32MB"), help="packer shard size (default: 32MB)")
    parser.add_argument("--pack-workers", type=int, default=2, help="packer.build workers (default: 2)")
    parser.add_argument("--wids-lru", type=int, default=0, help="wids lru_size (open shards kept); 0: the number of shards (default: 0)")
    parser.add_argument("--verify", type=int, default=32, help="indices compared byte for byte before timing (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the read order (default: 0)")
    parser.add_argument("--workdir", type=Path, default=None, help="directory in which a new temp dir holds the datasets (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the packed datasets (default: remove them)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="save settings and every result as JSON (default: no file)")
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    unknown = set(args.datasets) - set(DATASET_NAMES)
    if unknown or not args.datasets:
        parser.error(f"--datasets: choose from {', '.join(DATASET_NAMES)}")
    try:
        args.workers = [None if w.strip() == "none" else int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--workers: comma-separated integers or 'none', e.g. none,0,2")
    if not args.workers or any(w is not None and w < 0 for w in args.workers):
        parser.error("--workers: comma-separated non-negative integers or 'none', e.g. none,0,2")
    if args.scale <= 0 or args.repeat < 1 or args.batch_size < 1 or args.pack_workers < 1 or args.max_passes < 1 or args.wids_lru < 0 or args.verify < 0:
        parser.error("--scale, --repeat, --batch-size, --pack-workers, --max-passes must be positive; --wids-lru, --verify not negative")
    return args


def check_agreement(packed: Packed, count: int, seed: int) -> None:
    ours = open_ours(packed)
    theirs = open_wids(packed.wids_descriptor, packed.root, packed.shards)
    n = len(ours)
    rng = np.random.default_rng(seed + 1)
    indices = sorted({0, n - 1, *rng.integers(0, n, size=count).tolist()}) if count else []
    verify_same(ours, theirs, indices)
    theirs.close()
    print(f"  {packed.name}: ours and wids agree on {len(indices)} samples (key and bytes of every member); {packed.wids_note}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-indexed-", dir=args.workdir))
    try:
        datasets = []
        for name in args.datasets:
            packed = prepare(name, work, args.scale, args.shard_size, args.pack_workers)
            packed.wids_descriptor, packed.wids_note = wids_descriptor(packed, work)
            packed.firsts = shard_firsts(open_ours(packed))
            check_agreement(packed, args.verify, args.seed)
            datasets.append(packed)
        print(f"timing: order {args.order}, batch size {args.batch_size}, best of {args.repeat}, wids lru_size "
              f"{args.wids_lru or 'number of shards'}")
        results = {}
        for packed in datasets:
            for workers in args.workers:
                results[(packed.name, workers)] = bench(packed, workers, args)
        print_table(results)
        if args.json:
            save_json(args.json, args, datasets, results)
        print(f"total {time.perf_counter() - started:.0f} s")
        return 0
    except AssertionError as exc:
        print(f"error: the readers disagree: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
