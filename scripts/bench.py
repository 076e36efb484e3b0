#!/usr/bin/env python3
"""Everything side by side, in one run: packing, streaming, random access,
plain per-file reading, and ``cat``, with a warm and a cold page cache.

Why this exists
---------------
The machines these numbers come from are shared and noisy: only ratios
measured in one run mean anything.  This script makes its own synthetic
datasets, packs them, and times every method on them round-robin, so one
command gives every figure the README quotes.  The per-topic scripts
(``bench_pack.py``, ``bench_streaming.py``, ``bench_indexed.py``) go deeper
into one comparison each (best of several rounds, LitData, more options).

Datasets (``--scale`` multiplies the counts)
--------------------------------------------
* ``jpeg40k``: 4,000 samples of a ~40 kB JPEG + a small JSON;
* ``bin1k``: 40,000 single-file samples of 1,000 bytes;
* ``ptrows``: 40 ``.pt`` files of 1,000 rows each (``{"x": float32[64],
  "y": int64}``), packed with ``--rows`` into one sample per row.

What is timed
-------------
* **pack**: ``packer.build`` (2 workers, durable: fsync), GNU ``tar -cf``
  (one tar, no fsync), webdataset ``ShardWriter`` (no fsync); MB/s of
  source payload.  For ``ptrows`` the packer alone (``--rows``).
* **read** (DataLoader with each of ``--workers``, batches of 64 collated to
  a count, so almost nothing crosses processes; one full pass):
  ``cat`` (the shards read sequentially: the physical limit),
  ``per-file`` (a map-style Dataset of the source files in random order,
  one ``open``/``read`` per file, as users write by hand; for ``ptrows``
  one ``torch.load`` per ``.pt`` file, counted as its rows),
  ``stream`` (``StreamingTarDataset``, stored order, batched in the
  pipeline), ``stream-shuffled`` (default windows), ``webdataset``
  (``WebDataset`` with ``split_by_node``/``split_by_worker``, no decode),
  ``indexed`` (``IndexedTarDataset``, random order; its default
  ``read_ahead="auto"`` reads each shard into the page cache in the
  background at its first use when the dataset fits in half of the
  available memory, as these do), ``indexed-no-read-ahead`` (the same with
  ``read_ahead=False``: one random read per sample) and ``wids``
  (``ShardListDataset``, same order; skipped if wids is not installed).
* **cache**: ``warm`` reads every file the method reads once before the
  timing; ``cold`` evicts them first with ``posix_fadvise(DONTNEED)`` (the
  source tree for per-file, the shards otherwise).  Eviction needs the files
  not to be dirty: the script syncs them after writing.  The files were
  written moments before, so a cache below this machine (a VM host's) may
  still hold them and make cold reads look cheap; ``check_read_ahead.py``
  measures cold random access on a dataset you already have.

Rates are samples/s; best of ``--repeat``.  Warm: after the first batch,
from its arrival to the end of the pass (DataLoader worker start-up is left
out).  Cold: the whole pass, worker start-up included (the same for every
method), because the first batch is where a reader that reads whole files
when it opens them (wids indexing each tar) pays for its cold reads.  Results go to a Markdown table
on stdout, ``--markdown PATH`` and ``--json PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_pack  # noqa: E402
import bench_indexed  # noqa: E402
import check_read_ahead  # noqa: E402

BATCH = 64
ROW_FEATURES = 64


# ------------------------------------------------------------------ datasets


@dataclass
class Data:
    name: str
    src: Path
    packed: Path
    samples: int
    payload: int
    files: List[Path]
    rows_per_file: int = 0
    pack_rates: Dict[str, float] = field(default_factory=dict)

    def shards(self) -> List[Path]:
        return sorted(self.packed.glob("*.tar"))


def make_tree(name: str, src: Path, scale: float) -> None:
    from packer.examples import make_blob_tree, make_image_tree

    if name == "jpeg40k":
        make_image_tree(src, classes=10, per_class=max(1, round(400 * scale)), side=208, awkward=False, distinct_images=64)
    elif name == "bin1k":
        make_blob_tree(src, count=max(1, round(40000 * scale)), size=1000, per_dir=1000)
    elif name == "ptrows":
        import torch

        rng = np.random.default_rng(0)
        src.mkdir(parents=True)
        for i in range(max(1, round(40 * scale))):
            torch.save({"x": torch.from_numpy(rng.standard_normal((1000, ROW_FEATURES), dtype=np.float32)),
                        "y": torch.from_numpy(rng.integers(0, 10, 1000))}, src / f"part-{i:04d}.pt")
    else:
        raise ValueError(f"unknown dataset {name!r}")


def sync_tree(root: Path) -> None:
    """Flush written files, so that eviction really evicts them."""
    for path in root.rglob("*"):
        if path.is_file():
            bench_pack.fsync_path(path)


def evict(paths: Sequence[Path]) -> None:
    """Drop the files from the page cache, as ``check_read_ahead.py`` does
    (twice, so that read-ahead still in flight for the previous method does
    not warm the next method's pass)."""
    check_read_ahead.drop_from_cache([str(p) for p in paths])


def prepare(name: str, work: Path, scale: float, shard_size: int) -> Data:
    import packer

    src, dst = work / f"{name}-src", work / f"{name}-packed"
    make_tree(name, src, scale)
    sync_tree(src)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    payload = sum(p.stat().st_size for p in files)
    rows = name == "ptrows"
    rates: Dict[str, float] = {}
    methods: Dict[str, Callable[[Path], None]] = {
        "packer": lambda out: packer.build(src, out, packer.BuildOptions(shard_size=shard_size, workers=2, quiet=True, rows=rows)),
    }
    if not rows:
        methods["GNU tar"] = lambda out: bench_pack.pack_with_tar(src, out, shard_size)
        methods["ShardWriter"] = lambda out: bench_pack.pack_with_shardwriter(src, out, shard_size)
    for label, pack in methods.items():
        out = dst if label == "packer" else work / f"{name}-{label.replace(' ', '_')}"
        bench_indexed.warm_cache(files)
        start = time.perf_counter()
        pack(out)
        rates[label] = payload / (time.perf_counter() - start) / 1e6
        if label != "packer":
            shutil.rmtree(out)
    sync_tree(dst)
    from packer.index import PackedIndex

    samples = PackedIndex(dst).num_samples
    print(f"{name}: {len(files):,} files, {payload / 1e6:.1f} MB -> {samples:,} samples; pack MB/s "
          + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()), flush=True)
    return Data(name, src, dst, samples, payload, files, 1000 if rows else 0, rates)


# ------------------------------------------------------------------ readers


class PerFileDataset:
    """The hand-written baseline: one open/read per file (or torch.load per .pt)."""

    def __init__(self, root: Path, rows: bool) -> None:
        self.rows = rows
        groups: Dict[str, List[str]] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                stem = str(path.relative_to(root)).split(".", 1)[0]
                groups.setdefault(stem, []).append(str(path))
        self.samples = list(groups.values())

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        if self.rows:
            import torch

            data = torch.load(self.samples[i][0], weights_only=True)
            return {"__rows__": len(data["y"])}
        out: Dict[str, Any] = {}
        for path in self.samples[i]:
            with open(path, "rb") as f:
                out[path.rsplit(".", 1)[-1]] = f.read()
        return out


def count(batch: List[Dict[str, Any]]) -> int:
    """Collate to the number of samples (rows for per-file .pt items)."""
    return sum(int(s.get("__rows__", 1)) if isinstance(s, dict) else 1 for s in batch)


def make_loader(method: str, data: Data, workers: int, work: Path):
    from torch.utils.data import DataLoader

    from loaders import IndexedTarDataset, StreamingTarDataset

    order = np.random.default_rng(1).permutation(data.samples).tolist()
    if method == "per-file":
        dataset = PerFileDataset(data.src, rows=data.rows_per_file > 0)
        files_order = np.random.default_rng(1).permutation(len(dataset)).tolist()
        per_batch = 1 if dataset.rows else BATCH  # a .pt file already holds many rows
        return DataLoader(dataset, sampler=files_order, batch_size=per_batch, num_workers=workers, collate_fn=count)
    if method in ("stream", "stream-shuffled"):
        stream = StreamingTarDataset(data.packed, shuffle=method == "stream-shuffled").batched(BATCH, collation_fn=count)
        return DataLoader(stream, batch_size=None, num_workers=workers)
    if method == "webdataset":
        import webdataset

        wds = webdataset.WebDataset([str(p) for p in data.shards()], shardshuffle=False, empty_check=False,
                                    nodesplitter=webdataset.split_by_node, workersplitter=webdataset.split_by_worker)
        return DataLoader(wds, batch_size=BATCH, num_workers=workers, collate_fn=count)
    if method in ("indexed", "indexed-no-read-ahead"):
        dataset = IndexedTarDataset(data.packed, read_ahead="auto" if method == "indexed" else False)
        return DataLoader(dataset, sampler=order, batch_size=BATCH, num_workers=workers, collate_fn=count)
    if method == "wids":
        packed = bench_indexed.Packed(data.name, "", data.packed, data.samples, len(data.shards()), 0)
        descriptor, _ = bench_indexed.wids_descriptor(packed, work)
        dataset = bench_indexed.open_wids(descriptor, data.packed, lru=len(data.shards()))
        return DataLoader(dataset, sampler=order, batch_size=BATCH, num_workers=workers, collate_fn=count)
    raise ValueError(method)


def time_cat(data: Data) -> float:
    buffer = bytearray(8 << 20)
    start = time.perf_counter()
    for path in data.shards():
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
    return time.perf_counter() - start


def time_method(method: str, data: Data, workers: int, cache: str, work: Path) -> Optional[float]:
    """Samples (rows) per second of one pass; None when the method is unavailable."""
    reads = data.files if method == "per-file" else data.shards()
    (evict if cache == "cold" else bench_indexed.warm_cache)(reads)
    if method == "cat":
        return data.samples / time_cat(data)
    try:
        loader = make_loader(method, data, workers, work)
    except ImportError:
        return None
    # Warm: from the first batch on, so worker start-up is left out.  Cold:
    # the whole pass, since the first batch is where a reader that reads
    # whole files at open (wids indexing a tar) pays for its cold I/O.
    start = time.perf_counter()
    iterator = iter(loader)
    first = next(iterator)
    if cache == "warm":
        start = time.perf_counter()
    rest = sum(iterator)
    seconds = time.perf_counter() - start
    if first + rest != data.samples:
        raise RuntimeError(f"{data.name} {method} {workers}w: {first + rest} samples, expected {data.samples}")
    counted = rest if cache == "warm" else first + rest
    return counted / seconds if counted else None


# ------------------------------------------------------------------ report

READ_METHODS = ["cat", "per-file", "stream", "stream-shuffled", "webdataset", "indexed", "indexed-no-read-ahead", "wids"]


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def report(datas: List[Data], results: Dict[str, Dict[str, Optional[float]]], args: argparse.Namespace) -> str:
    lines = ["## Packing (MB/s of source payload; packer durable, others not)", "",
             "| dataset | packer | GNU tar | ShardWriter | packer vs tar | packer vs ShardWriter |", "|---|---:|---:|---:|---:|---:|"]
    for d in datas:
        r = d.pack_rates
        cells = " | ".join(f"{r[k]:.0f}" if k in r else "n/a" for k in ("packer", "GNU tar", "ShardWriter"))
        lines.append(f"| {d.name} | {cells} | "
                     f"{ratio(r.get('packer'), r.get('GNU tar'))} | {ratio(r.get('packer'), r.get('ShardWriter'))} |")
    lines += ["", "## Reading (samples/s; best of %d; warm: one pass after its first batch; cold: the whole pass)" % args.repeat, "",
              "| dataset | cache | workers | " + " | ".join(READ_METHODS) + " | stream vs webdataset | indexed vs wids | indexed no read-ahead vs wids | stream vs per-file | stream share of cat |",
              "|---|---|---:|" + "---:|" * (len(READ_METHODS) + 5)]
    for key, row in results.items():
        name, cache, workers = key.split("|")
        cells = " | ".join("n/a" if row.get(m) is None else f"{row[m]:,.0f}" for m in READ_METHODS)
        lines.append(f"| {name} | {cache} | {workers} | {cells} | {ratio(row.get('stream'), row.get('webdataset'))} | "
                     f"{ratio(row.get('indexed'), row.get('wids'))} | {ratio(row.get('indexed-no-read-ahead'), row.get('wids'))} | "
                     f"{ratio(row.get('stream'), row.get('per-file'))} | "
                     f"{ratio(row.get('stream'), row.get('cat'))} |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring for what is timed.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the sample counts")
    parser.add_argument("--datasets", default="jpeg40k,bin1k,ptrows")
    parser.add_argument("--methods", default=",".join(READ_METHODS))
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--caches", default="warm,cold")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--shard-size", default="32MB")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    from packer.units import parse_size

    args.shard_size = parse_size(args.shard_size)
    args.datasets = args.datasets.split(",")
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = set(args.methods) - set(READ_METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    args.workers = [int(w) for w in args.workers.split(",")]
    args.caches = args.caches.split(",")
    if not hasattr(os, "posix_fadvise") and "cold" in args.caches:
        parser.error("cold cache needs os.posix_fadvise (Linux)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=args.workdir))
    started = time.perf_counter()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs; work dir {work}")
    try:
        datas = [prepare(name, work, args.scale, args.shard_size) for name in args.datasets]
        results: Dict[str, Dict[str, Optional[float]]] = {}
        for data in datas:
            for cache in args.caches:
                for workers in args.workers:
                    row = results.setdefault(f"{data.name}|{cache}|{workers}", {})
                    for _ in range(args.repeat):
                        for method in args.methods:
                            if method == "cat" and workers != args.workers[0]:
                                continue
                            if data.rows_per_file and method in ("webdataset", "wids"):
                                continue
                            rate = time_method(method, data, workers, cache, work)
                            if rate is not None:
                                row[method] = max(row.get(method) or 0.0, rate)
                    print(f"  {data.name} {cache} {workers}w: " + ", ".join(f"{m} {v:,.0f}/s" for m, v in row.items() if v), flush=True)
            for key in [k for k in results if k.startswith(f"{data.name}|")]:
                cat = results[f"{data.name}|{key.split('|')[1]}|{args.workers[0]}"].get("cat")
                results[key].setdefault("cat", cat)
        text = report(datas, results, args)
        print()
        print(text)
        if args.markdown:
            args.markdown.write_text(text + "\n")
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "pack_mb_s": {d.name: d.pack_rates for d in datas},
                                             "read_samples_s": results}, indent=1))
        print(f"\ntotal {time.perf_counter() - started:.0f} s")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
