#!/usr/bin/env python3
"""How many shards should I make?  A recommendation, and measurements.

Why this exists
---------------
Too few shards and readers sit idle or ranks are uneven (with shard-level
splitters such as plain webdataset); too many tiny ones and opening,
seeking and metadata dominate.  The answer depends on the dataset, the
cluster shape (nodes x GPUs x DataLoader workers) and the storage.

What it does
------------
1. **Instant recommendation** from numbers alone (no packing): the dataset
   profile comes from SRC (a source tree, scanned as ``packer build`` would;
   or a packed dataset, from its index) or from ``--samples`` and
   ``--sample-size``; the rules are in ``packer/tuning.py`` and every step
   is printed as a reason.
2. **Measured mode** (``--measure``): packs a random subset of SRC
   (``--subset`` samples, hard-linked into a temporary tree; with a
   synthetic profile, ``--subset`` samples of ``--members`` random files of
   ``--sample-size`` bytes, +- ``--spread``, are made instead) at several
   shard counts around the recommendation scaled to the subset, and for
   each count measures, on this machine, for both loaders (streaming:
   ``StreamingTarDataset`` batched in its pipeline; indexed:
   ``IndexedTarDataset`` + ``ShardAwareSampler``) and each ``--measure-workers``
   value: rank 0's samples/s reading its share as rank 0 of the cluster's
   world size (``--nodes x --gpus-per-node``), and time to first batch (a
   new loader: index open, worker start-up, first read).  Per-rank balance is
   computed for the whole shape: this project's loaders give every rank the
   same count by construction; the table also shows what a shard-level
   splitter (plain webdataset with ``split_by_node``/``split_by_worker``)
   would give: largest/smallest rank share and readers left without a shard.
3. Prints the table and writes it as Markdown (``--table``, default
   ``tune_shards.md``) and, when matplotlib is installed (the optional
   ``plot`` extra), a PNG plot of samples/s against shard count, one line per
   loader and worker count (``--plot``, default ``tune_shards.png``).

How to read the output
----------------------
The recommendation block lists the reasons, then ``--shard-size`` /
``--num-shards`` values to pass to ``python -m packer build``.  In measured
mode each row is one (shard count, loader, workers); "best" is the shard
count with the highest streaming samples/s among those that leave no
reader idle for a shard-level splitter, converted to a shard size that
applies to the whole dataset.  The machine is shared and noisy: compare
rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packer.tuning import MB, STORAGE_RANGES, Cluster, Profile, recommend  # noqa: E402
from packer.units import parse_size  # noqa: E402


# ------------------------------------------------------------------ profile


def profile_of(src: Optional[Path], args: argparse.Namespace):
    """(Profile, scan table or None) from SRC or the synthetic arguments."""
    if src is None:
        if args.samples is None or args.sample_size is None:
            raise SystemExit("give SRC, or --samples and --sample-size for a synthetic profile")
        size = parse_size(args.sample_size)
        return Profile(args.samples, args.samples * size * args.members, args.members), None
    from packer.index import PackedIndex, is_dataset

    if is_dataset(src):
        index = PackedIndex(src)
        members = len(index.member_size)
        return Profile(index.num_samples, int(np.asarray(index.member_size).sum()), members / max(index.num_samples, 1)), None
    from packer.scan import scan_tree

    table = scan_tree(src, workers=args.scan_workers).table
    if table.num_samples == 0:
        raise SystemExit(f"{src}: no samples found")
    return Profile(table.num_samples, int(table.member_size.sum()), table.num_members / table.num_samples), table


def print_recommendation(profile: Profile, cluster: Cluster, storage: str):
    rec = recommend(profile, cluster, storage)
    print("recommendation")
    for reason in rec.reasons:
        print(f"  - {reason}")
    print(f"  => python -m packer build SRC DST --num-shards {rec.num_shards}   (or --shard-size {rec.shard_size_arg})")
    return rec


# ------------------------------------------------------------------ measuring


def make_synthetic_tree(root: Path, samples: int, args: argparse.Namespace) -> None:
    """``samples`` samples of ``--members`` random files of about ``--sample-size`` bytes."""
    rng = np.random.default_rng(args.seed)
    mean = parse_size(args.sample_size)
    members = max(1, round(args.members))
    for i in range(samples):
        folder = root / f"{i // 1000:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for m in range(members):
            size = max(0, int(mean * rng.uniform(1 - args.spread, 1 + args.spread)))
            (folder / f"{i:08d}.part{m}").write_bytes(rng.bytes(size))


def link_subset(src: Path, table: Any, count: int, seed: int, dst: Path) -> int:
    """Hard-link (or copy) the files of ``count`` random samples into ``dst``."""
    chosen = np.sort(np.random.default_rng(seed).choice(table.num_samples, size=min(count, table.num_samples), replace=False))
    for i in chosen.tolist():
        for m in table.members(i):
            rel = table.source_path(i, m)
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src / rel, target)
            except OSError:
                shutil.copy2(src / rel, target)
    return len(chosen)


def candidate_counts(subset_samples: int, readers: int, wanted: Optional[str]) -> List[int]:
    if wanted:
        counts = [int(c) for c in wanted.split(",")]
    else:
        counts = [max(1, readers // 4), max(1, readers // 2), readers, 2 * readers, 4 * readers, 8 * readers]
    return sorted({c for c in counts if 1 <= c <= subset_samples})


def shard_level_balance(shard_counts: np.ndarray, world: int, workers: int) -> Dict[str, float]:
    """What split_by_node + split_by_worker would give: shards r::world per
    rank, then w::workers per worker."""
    per_rank = [int(shard_counts[r::world].sum()) for r in range(world)]
    readers_with_shards = sum(
        1 for r in range(world) for w in range(max(workers, 1)) if len(shard_counts[r::world][w :: max(workers, 1)])
    )
    return {
        "rank_max_over_min": (max(per_rank) / min(per_rank)) if min(per_rank) else float("inf"),
        "idle_readers": world * max(workers, 1) - readers_with_shards,
    }


def measure_loader(kind: str, data: Path, world: int, workers: int, batch: int, min_seconds: float) -> Dict[str, float]:
    """Rank 0's samples/s (first batch to last, over enough passes of its
    share to last ``min_seconds``, workers started once) and the time from
    a new loader to its first batch."""
    from torch.utils.data import DataLoader

    from loaders import IndexedTarDataset, ShardAwareSampler, StreamingTarDataset

    def make(passes: int) -> DataLoader:
        if kind == "streaming":
            dataset = StreamingTarDataset(data, rank=0, world_size=world).batched(batch, collation_fn=len)
            return DataLoader(dataset.repeat(passes) if passes > 1 else dataset, batch_size=None, num_workers=workers)
        dataset = IndexedTarDataset(data)
        sampler = ShardAwareSampler(dataset, rank=0, world_size=world, batch_size=batch)
        order = np.concatenate([sampler.indices() for _ in range(passes)]).tolist()
        return DataLoader(dataset, sampler=order, batch_size=batch, num_workers=workers, collate_fn=len)

    def timed(passes: int):
        start = time.perf_counter()
        iterator = iter(make(passes))
        first = next(iterator)
        first_at = time.perf_counter()
        rest = sum(iterator)
        return first_at - start, first + rest, rest, time.perf_counter() - first_at

    first_batch_s, share, rest, seconds = timed(1)
    passes = 1
    while seconds < min_seconds and passes < 1000:
        passes = min(1000, max(passes * 2, int(passes * min_seconds / max(seconds, 1e-3)) + 1))
        _, _, rest, seconds = timed(passes)
    return {"samples_per_s": rest / max(seconds, 1e-9), "first_batch_s": first_batch_s, "rank_samples": share}


def plot(results: List[Dict[str, Any]], path: Path) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[plot]'): no plot"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (loader, workers) in sorted({(r["loader"], r["workers"]) for r in results}):
        rows = sorted((r for r in results if r["loader"] == loader and r["workers"] == workers), key=lambda r: r["shards"])
        ax.plot([r["shards"] for r in rows], [r["samples_per_s"] for r in rows], marker="o", label=f"{loader}, {workers} workers")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shards (subset)")
    ax.set_ylabel("rank 0 samples/s")
    ax.set_title("throughput vs shard count")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def run_measured(src: Path, table: Any, profile: Profile, cluster: Cluster, args: argparse.Namespace) -> int:
    from packer.build import BuildOptions, build
    from packer.index import PackedIndex

    work = Path(tempfile.mkdtemp(prefix="tune-shards-", dir=args.workdir))
    try:
        subset_dir = work / "subset"
        n = link_subset(src, table, args.subset, args.seed, subset_dir)
        subset_profile = Profile(n, int(profile.payload_bytes * n / profile.samples), profile.members_per_sample)
        counts = candidate_counts(n, cluster.readers, args.counts)
        print(f"\nmeasuring: {n:,} random samples (~{subset_profile.tar_bytes / MB:,.0f} MB), shard counts {counts}, "
              f"rank 0 of {cluster.ranks}, workers {args.measure_workers}")
        results: List[Dict[str, Any]] = []
        for count in counts:
            dst = work / f"shards-{count}"
            build(subset_dir, dst, BuildOptions(num_shards=count, workers=2, quiet=True, fsync=False))
            index = PackedIndex(dst)
            shard_counts = np.bincount(index.sample_shard, minlength=index.num_shards)
            balance = shard_level_balance(shard_counts, cluster.ranks, cluster.workers)
            shard_mb = sum(shard["num_bytes"] for shard in index.shards) / count / MB
            for loader in ("streaming", "indexed"):
                for workers in args.measure_workers:
                    measured = measure_loader(loader, dst, cluster.ranks, workers, args.batch_size, args.min_seconds)
                    row = {"shards": count, "shard_mb": shard_mb, "loader": loader, "workers": workers, **measured, **balance}
                    results.append(row)
                    print(f"  {count:5d} shards ({shard_mb:8.2f} MB) {loader:9s} {workers} workers: "
                          f"{measured['samples_per_s']:10,.0f} samples/s, first batch {measured['first_batch_s']:.3f} s", flush=True)
            shutil.rmtree(dst)
        text = table_text(results, cluster)
        print("\n" + text)
        args.table.write_text(text + "\n")
        print(f"table: {args.table}")
        best = choose(results)
        if best is not None:
            full_count = max(1, round(profile.tar_bytes / (best["shard_mb"] * MB)))
            print(f"\nbest on this machine: {best['shards']} shards of {best['shard_mb']:.3g} MB for the subset "
                  f"({best['samples_per_s']:,.0f} samples/s streaming); shards of that size for the whole dataset: "
                  f"--num-shards {full_count}")
            low = STORAGE_RANGES[args.storage][0] / MB
            if best["shard_mb"] < low:
                print(f"  (the subset's shards are under the {low:.0f} MB floor for {args.storage} storage; "
                      "prefer the recommendation above for the whole dataset)")
        problem = plot(results, args.plot)
        print(problem or f"plot: {args.plot}")
        if args.json:
            args.json.write_text(json.dumps({"profile": asdict(profile), "cluster": asdict(cluster), "results": results},
                                            indent=1, default=str))
            print(f"results: {args.json}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table_text(results: List[Dict[str, Any]], cluster: Cluster) -> str:
    lines = ["| shards | shard MB | loader | workers | rank 0 samples/s | first batch s | ranks equal (ours) "
             f"| shard-level splitter: max/min rank | idle readers of {cluster.readers} |",
             "|---:|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in results:
        ratio = "inf" if r["rank_max_over_min"] == float("inf") else f"{r['rank_max_over_min']:.2f}"
        lines.append(f"| {r['shards']} | {r['shard_mb']:.2f} | {r['loader']} | {r['workers']} | {r['samples_per_s']:,.0f} | "
                     f"{r['first_batch_s']:.3f} | yes | {ratio} | {r['idle_readers']} |")
    return "\n".join(lines)


def choose(results: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    streaming = [r for r in results if r["loader"] == "streaming"]
    fair = [r for r in streaming if r["idle_readers"] == 0] or streaming
    return max(fair, key=lambda r: r["samples_per_s"]) if fair else None


# ------------------------------------------------------------------ main


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See the module docstring for the rules and how to read the output.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("src", nargs="?", type=Path, help="source tree (or packed dataset) to profile")
    parser.add_argument("--samples", type=int, help="synthetic profile: number of samples")
    parser.add_argument("--sample-size", help="synthetic profile: mean bytes per member, e.g. 40kB")
    parser.add_argument("--members", type=float, default=1.0, help="synthetic profile: files per sample")
    parser.add_argument("--spread", type=float, default=0.5,
                        help="synthetic profile: member sizes are uniform in size x (1 +- spread)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes in the cluster")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="GPUs (ranks) per node")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers per GPU in the cluster")
    parser.add_argument("--storage", choices=sorted(STORAGE_RANGES), default="local",
                        help="where the shards will live: sets the shard size range")
    parser.add_argument("--measure", action="store_true", help="pack a subset at several shard counts and measure")
    parser.add_argument("--subset", type=int, default=20000, help="samples packed in measured mode")
    parser.add_argument("--counts", help="shard counts to measure, comma-separated (default: around the readers)")
    parser.add_argument("--measure-workers", default="0,2", help="DataLoader workers to measure with on this machine")
    parser.add_argument("--batch-size", type=int, default=64, help="per-rank batch size in measured mode")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="shortest throughput timing")
    parser.add_argument("--seed", type=int, default=0, help="subset choice")
    parser.add_argument("--scan-workers", type=int, default=2, help="processes scanning SRC")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary shards go (default: $TMPDIR)")
    parser.add_argument("--plot", type=Path, default=Path("tune_shards.png"),
                        help="measured mode: PNG plot to write (needs matplotlib, the 'plot' extra)")
    parser.add_argument("--table", type=Path, default=Path("tune_shards.md"), help="measured mode: Markdown table to write")
    parser.add_argument("--json", type=Path, default=None, help="save the measurements as JSON")
    args = parser.parse_args(argv)
    for name in ("nodes", "gpus_per_node", "subset", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    try:
        args.measure_workers = [int(w) for w in args.measure_workers.split(",")]
    except ValueError:
        parser.error("--measure-workers must be comma-separated integers")
    if args.measure and args.src is None and (args.samples is None or args.sample_size is None):
        parser.error("--measure needs SRC (a source tree) or a synthetic profile (--samples, --sample-size)")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.src is not None and not args.src.is_dir():
        print(f"error: {args.src}: not a directory", file=sys.stderr)
        return 2
    cluster = Cluster(args.nodes, args.gpus_per_node, args.workers)
    profile, table = profile_of(args.src, args)
    print_recommendation(profile, cluster, args.storage)
    if not args.measure:
        return 0
    if args.src is None:  # a synthetic profile: make a source tree that fits it
        with tempfile.TemporaryDirectory(prefix="tune-shards-src-", dir=args.workdir) as tmp:
            src = Path(tmp) / "src"
            make_synthetic_tree(src, min(args.subset, profile.samples), args)
            from packer.scan import scan_tree

            return run_measured(src, scan_tree(src).table, profile, cluster, args)
    if table is None:
        print("error: --measure needs a source tree (a packed dataset cannot be re-packed at other sizes)", file=sys.stderr)
        return 2
    return run_measured(args.src, table, profile, cluster, args)


if __name__ == "__main__":
    raise SystemExit(main())
