#!/usr/bin/env python3
"""Streaming throughput: StreamingTarDataset vs webdataset vs LitData, in one run.

Why this exists
---------------
``loaders.StreamingTarDataset`` streams the packed shards sequentially, the
way ``webdataset.WebDataset`` reads tar files and LitData's
``StreamingDataset`` reads the chunks written by ``litdata.optimize``.  Shared
machines are noisy, so absolute rates from different runs cannot be compared:
this script makes each synthetic dataset once, packs it with ``packer.build``
and converts the same source tree with ``litdata.optimize``, then times every
reader on it in the same run, round-robin, and reports the ratios between
them and against the physical limit of reading the shard files.

Datasets (``--scale`` multiplies the sample counts):

* ``jpeg40k``: 8,000 samples of a ~40 kB JPEG + a small JSON (~340 MB);
* ``bin1k``: 100,000 single-file samples of 1,000 bytes (~150 MB of tar).

Both are packed into shards of ``--shard-size`` (default 32 MB).  LitData
gets the same source tree: one sample is a dict of the raw bytes of the
sample's files keyed by extension, plus its ``__key__`` (the packed key), in
chunks of ``--chunk-bytes`` (default: the shard size), written by
``--pack-workers`` optimize workers.  Packing and optimizing are not timed
against each other (their times are printed for information); optimize runs
in a forked child process, because it sets the global multiprocessing start
method to ``spawn``, installs a SIGINT handler and sets environment variables
that would otherwise change the DataLoaders timed afterwards.  Its scratch
directories (``DATA_OPTIMIZER_CACHE_FOLDER``, ``DATA_OPTIMIZER_DATA_CACHE_FOLDER``,
which it deletes and re-creates, by default ``$TMPDIR/chunks`` and
``$TMPDIR/data``) and ``LITDATA_CACHE_DIR`` are pointed into the work dir.

What is timed
-------------
Methods (``--methods``), each reading the whole dataset once per pass:

* ``cat``: the shard files read sequentially in this process into one
  reused buffer (``readinto``, 8 MiB at a time): the physical limit of a
  warm page cache.  No DataLoader; its samples/s is the equivalent rate
  (samples per pass x passes / seconds).
* ``webdataset``: ``webdataset.WebDataset(tar paths, shardshuffle=False,
  nodesplitter=split_by_node, workersplitter=split_by_worker,
  empty_check=False)``, no decoding (members are raw ``bytes``).
* ``litdata``: ``litdata.StreamingDataset(optimized dir)`` (no shuffle),
  which reads a local directory in place (memory-mapped chunks; members come
  back as ``memoryview`` objects, without a copy, which the collate turns
  into ``bytes`` as any consumer would).  Skipped with a note if
  LitData is not importable.
* ``ours``: ``loaders.StreamingTarDataset(packed dir, shuffle=False, seed=0)``
  batched in its pipeline as its documentation recommends
  (``.batched(batch_size, collation_fn=<the same count collate>)``, DataLoader
  ``batch_size=None``); ``ours-shuffled``: the same with ``shuffle=True``
  (default shuffle buffer).
  If ``loaders`` has no ``StreamingTarDataset`` yet, both rows are skipped
  with a note.

Every reader runs in a ``torch.utils.data.DataLoader`` with each of
``--workers`` (default ``0,2``) worker processes, ``--batch-size`` samples
per batch, collated into just (count, member bytes) so that almost nothing
crosses process boundaries.  Several passes over the dataset are chained in
one iteration (each DataLoader worker iterates its dataset again), so worker
start-up is paid once.  The rate counts the samples after the first batch
over the time from the first batch to the last, so start-up (worker fork,
first shard open) is left out.  The number of passes is chosen per method by
an untimed calibration pass so that a timing lasts at least
``--min-seconds`` (at most ``--max-passes`` passes, except for cat).  Every
pass of every method must deliver the same number of samples and member
bytes as the source tree holds (checked after every run, calibration
included; the script fails with exit status 1 if not).

All (method, workers) configurations of a dataset are timed ``--repeat``
times round-robin, in a rotated order each round, and the best rate is kept.
Before each timing, the files the method reads (tar shards, or LitData's
chunks) are read once so that the page cache is equally warm: this is a
warm-cache measurement only, not a cold-disk one.

How to read the output
----------------------
A Markdown table, one row per (dataset, workers, method): passes per timing,
samples/s, payload MB/s (member bytes, 1 MB = 10**6 bytes), file MB/s (bytes
of the files the method reads: tar shards for cat/webdataset/ours, chunks
for litdata), then throughput ratios in samples/s: ``vs cat`` (share of the
physical limit), ``vs webdataset`` and ``vs litdata`` (same dataset, same
number of workers; above 1.00x is faster).  Under the table, one line per
(dataset, workers) compares ours with both peers.  ``--json PATH`` saves the
settings, versions, datasets (with pack and optimize times) and every timing.
The exit status is 0 whatever the ratios are (it is a measurement).

Usage::

    .venv/bin/python scripts/bench_streaming.py                         # default sizes, several minutes on 2 cores
    .venv/bin/python scripts/bench_streaming.py --scale 0.25 --repeat 1  # quick run
    .venv/bin/python scripts/bench_streaming.py --json bench-results/streaming.json

Needs LitData (``pip install --no-deps litdata`` plus its import-time
dependencies ``lightning-utilities``, ``boto3`` and ``requests``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the loaders of this checkout

from torch.utils.data import DataLoader, IterableDataset  # noqa: E402

# The same synthetic datasets as bench_indexed.py (8,000 ~40 kB JPEG+JSON; 100,000 x 1 kB).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_indexed import make_source  # noqa: E402
DATASET_NAMES = ("jpeg40k", "bin1k")
CAT, WDS, LIT, OURS, OURS_SHUFFLED = "cat", "webdataset", "litdata", "ours", "ours-shuffled"
METHOD_NAMES = (CAT, WDS, LIT, OURS, OURS_SHUFFLED)
READ_CHUNK = 8 << 20


class Mismatch(Exception):
    """A method delivered a different number of samples or bytes than the source holds."""


# ------------------------------------------------------------------ datasets


@dataclass
class Prepared:
    """One dataset: its packed shards and its LitData copy."""

    name: str
    description: str
    packed: Path
    optimized: Path
    samples: int  # per pass
    payload_bytes: int  # member bytes per pass (sum of the source files' sizes)
    shards: int = 0
    tar_bytes: int = 0
    chunks: int = 0
    chunk_bytes: int = 0  # total size of LitData's chunk files
    make_s: float = 0.0
    pack_s: float = 0.0
    optimize_s: float = 0.0

    def tar_paths(self) -> List[Path]:
        return sorted(self.packed.glob("*.tar"))

    def chunk_paths(self) -> List[Path]:
        return sorted(self.optimized.glob("*.bin"))


def source_samples(src: Path) -> List[Tuple[str, List[str]]]:
    """The source tree grouped into samples the packer's way (default
    ``last-dot`` key rule): [(packed key, [absolute file paths])], sorted."""
    from packer.names import escape_key, split_extension

    groups: Dict[str, List[str]] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src).replace(os.sep, "/")
        for name in sorted(filenames):
            parts = split_extension(name)
            if parts is None:
                continue
            stem = parts[0] if rel_dir == "." else f"{rel_dir}/{parts[0]}"
            groups.setdefault(escape_key(stem), []).append(os.path.join(dirpath, name))
    return sorted(groups.items())


def litdata_sample(item: Tuple[str, List[str]]) -> Dict[str, Any]:
    """``litdata.optimize``'s fn: one sample = its key + the raw bytes of its files by extension."""
    from packer.names import split_extension

    key, paths = item
    sample: Dict[str, Any] = {"__key__": key}
    for path in paths:
        extension = split_extension(os.path.basename(path))[1]
        with open(path, "rb") as f:
            sample[extension] = f.read()
    return sample


def _optimize_child(src: str, dst: str, chunk_bytes: int, workers: int) -> None:
    import litdata

    litdata.optimize(fn=litdata_sample, inputs=source_samples(Path(src)), output_dir=dst, chunk_bytes=chunk_bytes,
                     num_workers=workers, verbose=False)


def run_optimize(src: Path, dst: Path, chunk_bytes: int, workers: int) -> float:
    """``litdata.optimize`` in a forked child (it changes process-wide state); seconds."""
    child = multiprocessing.get_context("fork").Process(target=_optimize_child, args=(str(src), str(dst), chunk_bytes, workers))
    start = time.perf_counter()
    child.start()
    child.join()
    seconds = time.perf_counter() - start
    if child.exitcode != 0:
        raise RuntimeError(f"litdata.optimize failed (exit code {child.exitcode}); see its output above")
    return seconds


def prepare(name: str, work: Path, args: argparse.Namespace) -> Prepared:
    """Make the source tree, pack it, optimize it for LitData, delete the source."""
    import packer

    src = work / f"{name}-src"
    start = time.perf_counter()
    samples, description = make_source(name, src, args.scale)
    payload = sum(os.path.getsize(p) for _key, paths in source_samples(src) for p in paths)
    made = time.perf_counter() - start
    data = Prepared(name, description, work / name, work / f"{name}-litdata", samples, payload, make_s=made)
    start = time.perf_counter()
    packer.build(src, data.packed, packer.BuildOptions(shard_size=args.shard_size, workers=args.pack_workers, quiet=True, fsync=False))
    data.pack_s = time.perf_counter() - start
    if LIT in args.methods and not args.skips.get(LIT):
        data.optimize_s = run_optimize(src, data.optimized, args.chunk_bytes, args.pack_workers)
        chunks = data.chunk_paths()
        data.chunks, data.chunk_bytes = len(chunks), sum(p.stat().st_size for p in chunks)
    shutil.rmtree(src, ignore_errors=True)
    tars = data.tar_paths()
    data.shards, data.tar_bytes = len(tars), sum(p.stat().st_size for p in tars)
    print(f"{name}: {description}, {payload / 1e6:.1f} MB payload; made in {made:.1f} s; "
          f"packer.build: {data.shards} shards, {data.tar_bytes / 1e6:.1f} MB in {data.pack_s:.1f} s"
          + (f"; litdata.optimize: {data.chunks} chunks, {data.chunk_bytes / 1e6:.1f} MB in {data.optimize_s:.1f} s"
             if LIT in args.methods and not args.skips.get(LIT) else ""), flush=True)
    return data


def warm_cache(paths: Sequence[Path]) -> int:
    """Read every file once, so that all methods start from a warm page cache."""
    total = 0
    buffer = bytearray(READ_CHUNK)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                total += n
    return total


# ------------------------------------------------------------------- readers


class Passes(IterableDataset):
    """``passes`` iterations of ``dataset`` chained, so DataLoader workers start once."""

    def __init__(self, dataset: Any, passes: int) -> None:
        self.dataset, self.passes = dataset, passes

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.passes):
            yield from self.dataset


def count_bytes(batch: List[Dict[str, Any]]) -> Tuple[int, int]:
    """Collate that drops the data: (samples, member bytes).

    A ``memoryview`` (LitData's members) is turned into ``bytes`` first, as
    any consumer does (``io.BytesIO``, ``PIL.Image.open``, ``torch.frombuffer``
    on a copy): a view of a memory-mapped chunk that nobody touches has not
    been read yet, and counting its length alone would time no reading.
    """
    nbytes = 0
    for sample in batch:
        for name, value in sample.items():
            if not name.startswith("__"):
                nbytes += len(bytes(value)) if isinstance(value, memoryview) else len(value)
    return len(batch), nbytes


def streaming_tar_dataset() -> Tuple[Optional[type], str]:
    """``loaders.StreamingTarDataset``, or None and why not."""
    try:
        from loaders import StreamingTarDataset
    except ImportError as exc:
        print(f"ours, ours-shuffled: skipped: loaders.StreamingTarDataset not available ({type(exc).__name__}: {exc})")
        return None, "skipped: no loaders.StreamingTarDataset"
    return StreamingTarDataset, ""


def litdata_missing() -> str:
    """Why the litdata rows are skipped ("" when LitData imports)."""
    try:
        importlib.import_module("litdata")
    except ImportError as exc:
        print(f"litdata: skipped: LitData not importable ({type(exc).__name__}: {exc})")
        return "skipped: litdata not importable"
    return ""


def make_webdataset(data: Prepared) -> Any:
    import webdataset

    return webdataset.WebDataset([str(p) for p in data.tar_paths()], shardshuffle=False, nodesplitter=webdataset.split_by_node,
                                 workersplitter=webdataset.split_by_worker, empty_check=False)


def make_litdata(data: Prepared) -> Any:
    import litdata

    return litdata.StreamingDataset(str(data.optimized))


@dataclass(frozen=True)
class Method:
    name: str
    workers: Optional[int]  # None: no DataLoader (cat)
    make: Optional[Callable[[Prepared], Any]]  # None: cat
    files: Callable[[Prepared], List[Path]]  # what it reads (warmed before each timing)
    batches_itself: bool = False  # the dataset yields (count, bytes) batches: DataLoader(batch_size=None)

    @property
    def label(self) -> str:
        return self.name if self.workers is None else f"{self.name}/{self.workers}w"


def methods_for(args: argparse.Namespace, ours: Optional[type]) -> List[Method]:
    tars, chunks = Prepared.tar_paths, Prepared.chunk_paths
    makers: Dict[str, Tuple[Callable[[Prepared], Any], Callable[[Prepared], List[Path]]]] = {
        WDS: (make_webdataset, tars), LIT: (make_litdata, chunks)}
    if ours is not None:
        # As recommended for it: batched in the pipeline, DataLoader(batch_size=None).
        b = args.batch_size
        makers[OURS] = (lambda d: ours(d.packed, shuffle=False, seed=0).batched(b, collation_fn=count_bytes), tars)
        makers[OURS_SHUFFLED] = (lambda d: ours(d.packed, shuffle=True, seed=0).batched(b, collation_fn=count_bytes), tars)
    todo = [Method(CAT, None, None, tars)] if CAT in args.methods else []
    for workers in args.workers:
        for name in args.methods:
            if name in makers and not args.skips.get(name):
                todo.append(Method(name, workers, *makers[name], batches_itself=name in (OURS, OURS_SHUFFLED)))
    return todo


# -------------------------------------------------------------------- timing


@dataclass
class Run:
    """One iteration of ``passes`` passes."""

    read_s: float  # first batch to last (cat: the whole read)
    samples: int  # samples counted in read_s
    payload: int  # member bytes counted in read_s
    epoch_s: float  # the whole iteration, worker start-up included
    total_samples: int
    total_payload: int


def run_cat(data: Prepared, passes: int) -> Run:
    buffer = bytearray(READ_CHUNK)
    paths = data.tar_paths()
    start = time.perf_counter()
    nbytes = 0
    for _ in range(passes):
        for path in paths:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buffer):
                    nbytes += n
    seconds = time.perf_counter() - start
    if nbytes != passes * data.tar_bytes:
        raise Mismatch(f"{data.name}: cat read {nbytes} bytes in {passes} pass(es), expected {passes * data.tar_bytes}")
    samples, payload = passes * data.samples, passes * data.payload_bytes
    return Run(seconds, samples, payload, seconds, samples, payload)


def run_loader(method: Method, data: Prepared, passes: int, batch_size: int) -> Run:
    assert method.make is not None
    dataset = Passes(method.make(data), passes)
    if method.batches_itself:
        loader = DataLoader(dataset, batch_size=None, num_workers=method.workers or 0)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=method.workers or 0, collate_fn=count_bytes)
    start = time.perf_counter()
    first_at, steady_n, steady_bytes, total_n, total_bytes = 0.0, 0, 0, 0, 0
    for k, (n, nbytes) in enumerate(loader):
        total_n += n
        total_bytes += nbytes
        if k == 0:
            first_at = time.perf_counter()
        else:
            steady_n += n
            steady_bytes += nbytes
    end = time.perf_counter()
    if steady_n == 0:  # a single batch: fall back to the whole iteration
        return Run(end - start, total_n, total_bytes, end - start, total_n, total_bytes)
    return Run(end - first_at, steady_n, steady_bytes, end - start, total_n, total_bytes)


def run_once(method: Method, data: Prepared, passes: int, batch_size: int) -> Run:
    warm_cache(method.files(data))
    run = run_cat(data, passes) if method.make is None else run_loader(method, data, passes, batch_size)
    want = (passes * data.samples, passes * data.payload_bytes)
    if (run.total_samples, run.total_payload) != want:
        raise Mismatch(f"{data.name}, {method.label}: {run.total_samples} samples and {run.total_payload} member bytes "
                       f"in {passes} pass(es), expected {want[0]} and {want[1]} ({data.samples} and {data.payload_bytes} per pass)")
    return run


@dataclass
class Timing:
    """A method's best timing on one dataset."""

    dataset: str
    method: str
    workers: Optional[int]
    passes: int = 0
    read_s: float = math.inf
    samples: int = 0
    payload: int = 0
    file_bytes_per_pass: int = 0
    epoch_s: float = math.inf
    all_samples_per_s: List[float] = field(default_factory=list)
    note: str = ""

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.read_s if self.samples and self.read_s > 0 else 0.0

    @property
    def payload_mb_per_s(self) -> float:
        return self.payload / 1e6 / self.read_s if self.samples and self.read_s > 0 else 0.0

    def file_mb_per_s(self, samples_per_pass: int) -> float:
        if not self.samples or self.read_s <= 0:
            return 0.0
        return self.file_bytes_per_pass * (self.samples / samples_per_pass) / 1e6 / self.read_s


def calibrate(method: Method, data: Prepared, args: argparse.Namespace) -> int:
    """Passes for ``method``'s timing to last ``--min-seconds`` (one untimed, checked pass)."""
    run = run_once(method, data, 1, args.batch_size)
    per_pass = run.read_s if method.make is None else run.epoch_s
    passes = max(1, math.ceil(1.25 * args.min_seconds / max(per_pass, 1e-6)))
    return passes if method.make is None else min(args.max_passes, passes)  # cat: no limit, it is cheap


def bench(data: Prepared, todo: Sequence[Method], args: argparse.Namespace) -> List[Timing]:
    passes = {m.label: calibrate(m, data, args) for m in todo}
    timings = {m.label: Timing(data.name, m.name, m.workers, passes[m.label], file_bytes_per_pass=sum(p.stat().st_size for p in m.files(data)))
               for m in todo}
    for r in range(args.repeat):
        k = r % len(todo)
        for method in list(todo[k:]) + list(todo[:k]):
            run = run_once(method, data, passes[method.label], args.batch_size)
            t = timings[method.label]
            rate = run.samples / run.read_s if run.read_s > 0 else 0.0
            t.all_samples_per_s.append(rate)
            t.epoch_s = min(t.epoch_s, run.epoch_s)
            if rate > t.samples_per_s:
                t.read_s, t.samples, t.payload = run.read_s, run.samples, run.payload
        print(f"  {data.name} round {r + 1}/{args.repeat}: "
              + ", ".join(f"{m.label} {timings[m.label].all_samples_per_s[-1]:,.0f}/s" for m in todo), flush=True)
    return [timings[m.label] for m in todo]


# ------------------------------------------------------------------- report


def label(workers: Optional[int]) -> str:
    return "-" if workers is None else str(workers)


def ratio(a: Optional[Timing], b: Optional[Timing]) -> Optional[float]:
    if a is None or b is None or a.note or b.note or b.samples_per_s <= 0:
        return None
    return a.samples_per_s / b.samples_per_s


def add_ratios(rows: List[Timing]) -> List[Dict[str, Any]]:
    """Each row with its ratios to cat and to webdataset/litdata with the same (dataset, workers)."""
    by_key = {(t.dataset, t.method, t.workers): t for t in rows}
    out = []
    for t in rows:
        cat = by_key.get((t.dataset, CAT, None))
        out.append({
            "timing": t,
            "vs_cat": None if t.method == CAT else ratio(t, cat),
            "vs_webdataset": None if t.method in (CAT, WDS) else ratio(t, by_key.get((t.dataset, WDS, t.workers))),
            "vs_litdata": None if t.method in (CAT, LIT) else ratio(t, by_key.get((t.dataset, LIT, t.workers))),
        })
    return out


def fmt_ratio(value: Optional[float]) -> str:
    if value is None:
        return ""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def print_table(rows: List[Dict[str, Any]], datasets: Dict[str, Prepared], args: argparse.Namespace) -> None:
    print()
    print(f"Best of {args.repeat}, warm page cache, batch size {args.batch_size}; workers: DataLoader num_workers "
          "(- : no DataLoader); MB = 10**6 bytes; ratios are samples/s against the same dataset and workers.")
    print()
    header = ["dataset", "workers", "method", "passes", "samples/s", "payload MB/s", "file MB/s", "vs cat", "vs webdataset", "vs litdata", "note"]
    lines = [header, ["---"] * 3 + ["---:"] * 7 + ["---"]]
    for row in rows:
        t: Timing = row["timing"]
        if t.note:
            lines.append([t.dataset, label(t.workers), t.method, "", "", "", "", "", "", "", t.note])
            continue
        lines.append([t.dataset, label(t.workers), t.method, str(t.passes), f"{t.samples_per_s:,.0f}", f"{t.payload_mb_per_s:,.1f}",
                      f"{t.file_mb_per_s(datasets[t.dataset].samples):,.1f}", fmt_ratio(row["vs_cat"]),
                      fmt_ratio(row["vs_webdataset"]), fmt_ratio(row["vs_litdata"]),
                      "samples/s: equivalent rate" if t.method == CAT else ""])
    for line in lines:
        print("| " + " | ".join(line) + " |")
    print()
    for row in rows:
        t = row["timing"]
        if t.method in (OURS, OURS_SHUFFLED) and not t.note:
            print(f"{t.dataset}, workers {label(t.workers)}: {t.method} vs webdataset {fmt_ratio(row['vs_webdataset']) or 'n/a'}, "
                  f"vs litdata {fmt_ratio(row['vs_litdata']) or 'n/a'}, {fmt_ratio(row['vs_cat']) or 'n/a'} of cat")


def versions() -> Dict[str, str]:
    import torch
    import webdataset

    found = {"python": platform.python_version(), "torch": torch.__version__, "webdataset": getattr(webdataset, "__version__", "?")}
    try:
        import litdata

        found["litdata"] = litdata.__version__
    except ImportError as exc:
        found["litdata"] = f"not importable: {exc}"
    return found


def save_json(path: Path, args: argparse.Namespace, datasets: Sequence[Prepared], rows: List[Dict[str, Any]], total_s: float) -> None:
    record = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "start_method": multiprocessing.get_start_method(),
                    **versions()},
        "datasets": [{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(d).items()} for d in datasets],
        "results": [
            dict(asdict(row["timing"]), samples_per_s=row["timing"].samples_per_s, payload_mb_per_s=row["timing"].payload_mb_per_s,
                 file_mb_per_s=row["timing"].file_mb_per_s(next(d.samples for d in datasets if d.name == row["timing"].dataset)),
                 vs_cat=row["vs_cat"], vs_webdataset=row["vs_webdataset"], vs_litdata=row["vs_litdata"])
            for row in rows
        ],
        "total_seconds": total_s,
    }
    record["results"] = [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in record["results"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n", "utf-8")
    print(f"saved {path}")


# --------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from packer.units import parse_size

    def size(text: str) -> int:
        try:
            return parse_size(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="See the module docstring (top of this file) for what is timed and how to read the output.")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sample counts (8,000 JPEG+JSON, 100,000 x 1 kB) (default: 1.0)")
    parser.add_argument("--datasets", default=",".join(DATASET_NAMES), help=f"comma-separated subset of {', '.join(DATASET_NAMES)} (default: all)")
    parser.add_argument("--methods", default=",".join(METHOD_NAMES), help=f"comma-separated subset of {', '.join(METHOD_NAMES)} (default: all)")
    parser.add_argument("--workers", default="0,2", help="comma-separated DataLoader num_workers values (default: 0,2)")
    parser.add_argument("--repeat", type=int, default=3, help="timings per configuration, round-robin; the best is kept (default: 3)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="shortest timing; sets each method's passes over the dataset (default: 1.0)")
    parser.add_argument("--max-passes", type=int, default=50, help="upper limit on passes over the dataset per DataLoader timing; cat has none (default: 50)")
    parser.add_argument("--batch-size", type=int, default=64, help="DataLoader batch size (default: 64)")
    parser.add_argument("--shard-size", type=size, default=size("32MB"), help="packer shard size (default: 32MB)")
    parser.add_argument("--chunk-bytes", type=size, default=None, help="litdata.optimize chunk_bytes (default: the shard size)")
    parser.add_argument("--pack-workers", type=int, default=2, help="packer.build workers and litdata.optimize num_workers (default: 2)")
    parser.add_argument("--workdir", type=Path, default=None, help="directory in which a new temp dir holds the datasets (default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the packed and optimized datasets (default: remove them)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="save settings, versions, datasets and every result as JSON (default: no file)")
    args = parser.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    if set(args.datasets) - set(DATASET_NAMES) or not args.datasets:
        parser.error(f"--datasets: choose from {', '.join(DATASET_NAMES)}")
    args.methods = [m for m in args.methods.split(",") if m]
    if set(args.methods) - set(METHOD_NAMES) or not args.methods:
        parser.error(f"--methods: choose from {', '.join(METHOD_NAMES)}")
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--workers: comma-separated integers, e.g. 0,2")
    if not args.workers or any(w < 0 for w in args.workers):
        parser.error("--workers: comma-separated non-negative integers, e.g. 0,2")
    if args.scale <= 0 or args.repeat < 1 or args.batch_size < 1 or args.pack_workers < 1 or args.max_passes < 1 or args.min_seconds < 0:
        parser.error("--scale, --repeat, --batch-size, --pack-workers, --max-passes must be positive; --min-seconds not negative")
    if args.chunk_bytes is None:
        args.chunk_bytes = args.shard_size
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-streaming-", dir=args.workdir))
    # litdata.optimize deletes and re-creates its scratch folders ($TMPDIR/chunks
    # and $TMPDIR/data by default); keep them, and LitData's cache, in the work dir.
    for variable, sub in (("DATA_OPTIMIZER_CACHE_FOLDER", "optimize-chunks"), ("DATA_OPTIMIZER_DATA_CACHE_FOLDER", "optimize-data"),
                          ("LITDATA_CACHE_DIR", "litdata-cache")):
        os.environ[variable] = str(work / sub)
    try:
        ours, ours_note = streaming_tar_dataset()
        args.skips = {LIT: litdata_missing(), OURS: ours_note, OURS_SHUFFLED: ours_note}
        todo = methods_for(args, ours)
        env = versions()
        print(f"{', '.join(f'{k} {v}' for k, v in env.items())}, {os.cpu_count()} CPUs, start method {multiprocessing.get_start_method()}")
        print(f"work dir {work}; shard size {args.shard_size} bytes, litdata chunk_bytes {args.chunk_bytes}; "
              f"best of {args.repeat}; batch size {args.batch_size}; workers {args.workers}", flush=True)
        datasets = {name: prepare(name, work, args) for name in args.datasets}
        timings: List[Timing] = []
        for data in datasets.values():
            found = {(t.method, t.workers): t for t in bench(data, todo, args)}
            if (CAT, None) in found:
                timings.append(found[CAT, None])
            for workers in args.workers:
                for name in args.methods:
                    if name != CAT:
                        timings.append(found.get((name, workers)) or Timing(data.name, name, workers, note=args.skips[name]))
        rows = add_ratios(timings)
        print_table(rows, datasets, args)
        total = time.perf_counter() - started
        if args.json:
            save_json(args.json, args, list(datasets.values()), rows, total)
        print(f"total {total:.0f} s")
        return 0
    except Mismatch as exc:
        print(f"error: the readers disagree with the source: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
