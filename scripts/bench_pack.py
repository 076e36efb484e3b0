#!/usr/bin/env python3
"""Packing throughput: packer vs GNU tar vs webdataset.ShardWriter, in one run.

Why this exists
---------------
The packer aims to be much faster than the way WebDataset shards are packed
today (a Python loop feeding ``webdataset.ShardWriter``) and not far behind
the floor set by ``tar -cf``, which writes one unbalanced, unindexed archive.
Shared machines are noisy, so absolute seconds from different runs cannot be
compared.  This script therefore builds one synthetic source tree per
dataset and packs it every way *in the same run*, and reports each method
relative to the baselines measured moments earlier on the same machine:

* ``packer (1 worker)`` and ``packer (all cores, N)``: ``packer.build`` with
  ``workers=1`` and ``workers=os.cpu_count()`` (scan, plan, shards, index),
  with its default ``fsync=True``: every shard is flushed to disk (fsync),
  then the output directory, before the index is written;
* ``packer (all cores, N, no fsync)``: the same on all cores with
  ``fsync=False`` (CLI ``--no-fsync``): when it returns, shards may still be
  only in the page cache;
* ``GNU tar``: ``tar -cf out.tar -C SRC .`` in a subprocess; tar does not
  fsync, so its output may still be only in the page cache when it returns;
* ``GNU tar + sync``: the same ``tar -cf``, then, inside the timing, an
  fsync of ``out.tar`` and of the directory holding it: the durability the
  packer gives by default;
* ``wds ShardWriter``: a sorted walk of SRC that groups files into samples
  (key = relative path without its extension), reads each file's bytes and
  calls ``ShardWriter.write``, the usual way to pack today (no fsync).

Every method reads the same source tree, which is read in full right before
each timing so the page cache is equally warm for all (kernels with
proactive reclaim, such as DAMON's, drop file pages idle for about a
minute), writes to the same file system, and has its output deleted (and the
file system synced) before the next timing.  Methods
run round-robin, in a rotated order in each round, and the best of
``--repeat`` timings per method is kept.

How to read the output
----------------------
One table row per (dataset, method): the best time in seconds; MB/s is the
source payload (sum of the source files' sizes, 1 MB = 10**6 bytes) divided
by that time; files/s counts source files; ``durable`` says whether the
method's output is flushed to disk (fsync) before its timing ends.  ``vs
tar``, ``vs tar+sync`` and ``vs ShardWriter`` are throughput ratios
(baseline seconds / method seconds), so above 1.00x means faster than that
baseline.  ``tars`` is the number of tar files the method wrote (the shard
size is printed above the table; ShardWriter's ``maxsize`` counts payload
bytes only, so its shards are fewer and larger than the packer's on small
files).

Flushing to disk costs time that a method which leaves its output in the
page cache does not pay inside its timing, so compare like with like:

* durable vs durable: ``packer (all cores, N)`` in the ``vs tar+sync``
  column;
* not durable vs not durable: ``packer (all cores, N, no fsync)`` in the
  ``vs tar`` column.

The ``vs ShardWriter`` column of the default (durable) packer compares it
with a loop that does not flush, so it understates the packer if anything.
Under the table, one line per dataset and goal says whether the packer on
all cores reaches the goal: the default packer at least 3x the ShardWriter
loop and at least 0.7x GNU tar + sync, and the packer without fsync at least
0.7x plain GNU tar.  The exit status is 0 whether or not the goals are met;
it is a measurement.

Usage::

    .venv/bin/python scripts/bench_pack.py                 # default sizes, ~4 min on 2 cores
    .venv/bin/python scripts/bench_pack.py --scale 0.1 --repeat 1   # quick smoke run
    .venv/bin/python scripts/bench_pack.py --json bench.json --keep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # benchmark the packer of this checkout

import packer  # noqa: E402
from packer.examples import make_blob_tree, make_image_tree  # noqa: E402

# Sizes.  GNU tar packs a warm tree at over 1 GB/s here, so the trees are
# large enough for its timing to reach about a second: shorter timings are
# mostly noise on a shared machine.  The shard size gives ~13 shards per
# ~200 MB of images (--scale 0.25 is that set), i.e. ~52 for the default set.
DEFAULT_SHARD_SIZE = 16 * 10**6
DEFAULT_REPEAT = 3

# Dataset (a): ~40 kB JPEG + small JSON per sample, ~790 MB at scale 1.
IMAGE_SAMPLES = 20_000
IMAGE_CLASSES = 20
# Noise JPEGs of side 208 (a multiple of the 16-pixel MCU) are ~39.4 kB;
# the dataset line printed before the timings shows the actual mean size.
IMAGE_SIDE = 208
# Dataset (b): single-file samples of 1 KiB, ~120 MB at scale 1.
BLOB_FILES = 120_000
BLOB_SIZE = 1024
BLOB_PER_DIR = 1000

GOAL_VS_SHARDWRITER = 3.0  # default (durable) packer on all cores
GOAL_VS_TAR_SYNC = 0.7  # durable vs durable
GOAL_VS_TAR = 0.7  # packer without fsync vs plain tar: neither durable

# Method roles: what the ratios and goals refer to.
TAR = "tar"
TAR_SYNC = "tar-sync"
SHARDWRITER = "shardwriter"
PACKER_ONE = "packer-1"
PACKER_ALL = "packer-all"
PACKER_ALL_NO_FSYNC = "packer-all-no-fsync"


# ------------------------------------------------------------------ datasets


@dataclass
class Dataset:
    """A synthetic source tree and what it holds."""

    name: str
    description: str
    root: Path
    samples: int
    files: int = 0
    payload_bytes: int = 0


def make_images(root: Path, scale: float) -> Dataset:
    """Dataset (a): ImageFolder-style JPEG + JSON pairs."""
    per_class = max(1, round(IMAGE_SAMPLES * scale / IMAGE_CLASSES))
    samples = make_image_tree(root, classes=IMAGE_CLASSES, per_class=per_class, side=IMAGE_SIDE, seed=0, awkward=False)
    jpegs = list(root.rglob("*.jpg"))
    mean = sum(p.stat().st_size for p in jpegs) / max(1, len(jpegs))
    return Dataset("images", f"{samples} samples of a JPEG (mean {mean / 1000:.1f} kB) + small JSON", root, samples)


def make_small(root: Path, scale: float) -> Dataset:
    """Dataset (b): many single-file samples of 1 KiB."""
    count = max(1, round(BLOB_FILES * scale))
    samples = make_blob_tree(root, count=count, size=BLOB_SIZE, per_dir=BLOB_PER_DIR, seed=0)
    return Dataset("small", f"{samples} single-file samples of {BLOB_SIZE} bytes", root, samples)


DATASET_MAKERS: Dict[str, Callable[[Path, float], Dataset]] = {"images": make_images, "small": make_small}


def read_tree(root: Path) -> Tuple[int, int]:
    """Read every file under ``root`` once (warming the page cache); returns
    the number of files and their total size."""
    files = payload = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                payload += len(f.read())
            files += 1
    return files, payload


def warm_cache(dataset: Dataset) -> None:
    dataset.files, dataset.payload_bytes = read_tree(dataset.root)


# ------------------------------------------------------------------- methods


def pack_with_packer(src: Path, out: Path, shard_size: int, *, workers: int, fsync: bool) -> None:
    options = packer.BuildOptions(shard_size=shard_size, workers=workers, quiet=True, fsync=fsync)
    packer.build(src, out, options)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pack_with_tar(src: Path, out: Path, shard_size: int, *, sync: bool = False) -> None:
    """``tar -cf``; with ``sync``, then fsync the archive and its directory, as
    the packer does with its shards and output directory by default."""
    out.mkdir()
    archive = out / "out.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(src), "."], check=True)
    if sync:
        fsync_path(archive)
        fsync_path(out)


def iter_wds_samples(src: Path) -> Iterator[Dict[str, object]]:
    """Samples the WebDataset way: sorted walk, one sample per relative stem."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, src).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        samples: Dict[str, Dict[str, object]] = {}
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            if not ext:
                continue
            sample = samples.setdefault(stem, {"__key__": prefix + stem})
            with open(os.path.join(dirpath, name), "rb") as f:
                sample[ext[1:]] = f.read()
        yield from samples.values()


def pack_with_shardwriter(src: Path, out: Path, shard_size: int) -> None:
    import webdataset

    out.mkdir()
    pattern = str(out / "shard-%06d.tar")
    with webdataset.ShardWriter(pattern, maxsize=shard_size, maxcount=10**12, verbose=0) as sink:
        for sample in iter_wds_samples(src):
            sink.write(sample)


@dataclass(frozen=True)
class Method:
    role: str  # one of the method roles above
    name: str  # as printed
    durable: bool  # output flushed to disk (fsync) before the timing ends
    run: Callable[[Path, Path, int], None]  # (src, out, shard_size)


def methods(all_cores: int) -> List[Method]:
    return [
        Method(TAR, "GNU tar", False, pack_with_tar),
        Method(TAR_SYNC, "GNU tar + sync", True, partial(pack_with_tar, sync=True)),
        Method(SHARDWRITER, "wds ShardWriter", False, pack_with_shardwriter),
        Method(PACKER_ONE, "packer (1 worker)", True, partial(pack_with_packer, workers=1, fsync=True)),
        Method(
            PACKER_ALL, f"packer (all cores, {all_cores})", True, partial(pack_with_packer, workers=all_cores, fsync=True)
        ),
        Method(
            PACKER_ALL_NO_FSYNC,
            f"packer (all cores, {all_cores}, no fsync)",
            False,
            partial(pack_with_packer, workers=all_cores, fsync=False),
        ),
    ]


# ------------------------------------------------------------------- timing


@dataclass
class Result:
    dataset: str
    role: str
    method: str
    durable: bool
    seconds: float  # best of all_seconds
    all_seconds: List[float]
    tars: int
    output_bytes: int
    mb_per_s: float = 0.0
    files_per_s: float = 0.0
    vs_tar: float = 0.0
    vs_tar_sync: float = 0.0
    vs_shardwriter: float = 0.0


@dataclass(frozen=True)
class GoalSpec:
    """A goal: ``subject`` reaches at least ``goal`` times ``baseline``'s throughput."""

    subject_role: str
    subject: str  # as printed
    baseline_role: str
    baseline: str  # as printed
    goal: float


GOAL_SPECS: Tuple[GoalSpec, ...] = (
    GoalSpec(PACKER_ALL, "packer (all cores)", SHARDWRITER, "ShardWriter", GOAL_VS_SHARDWRITER),
    GoalSpec(PACKER_ALL, "packer (all cores)", TAR_SYNC, "GNU tar + sync", GOAL_VS_TAR_SYNC),
    GoalSpec(PACKER_ALL_NO_FSYNC, "packer (all cores, no fsync)", TAR, "GNU tar", GOAL_VS_TAR),
)


@dataclass
class Goal:
    dataset: str
    subject: str
    baseline: str
    ratio: float
    goal: float
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = self.ratio >= self.goal

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"{self.dataset}: {self.subject} vs {self.baseline}: {self.ratio:.2f}x (goal >= {self.goal:g}x) {verdict}"


def remove(path: Path) -> None:
    """Delete a method's output and flush the file system, outside any timing."""
    if path.exists():
        shutil.rmtree(path)
    os.sync()


def tar_outputs(out: Path) -> Tuple[int, int]:
    """Number and total size of the tar files a method wrote."""
    tars = list(out.rglob("*.tar"))
    return len(tars), sum(p.stat().st_size for p in tars)


def time_once(method: Method, src: Path, out: Path, shard_size: int) -> float:
    """One timing from a warm source tree and an empty, synced destination."""
    read_tree(src)
    remove(out)
    start = time.perf_counter()
    method.run(src, out, shard_size)
    return time.perf_counter() - start


def bench_dataset(dataset: Dataset, todo: Sequence[Method], out_root: Path, shard_size: int, repeat: int) -> List[Result]:
    """Time every method ``repeat`` times, round-robin in rotated order."""
    timings: Dict[str, List[float]] = {m.role: [] for m in todo}
    outputs: Dict[str, Tuple[int, int]] = {}
    out_root.mkdir(parents=True, exist_ok=True)
    out = out_root / dataset.name
    for round_no in range(repeat):
        k = round_no % len(todo)
        for method in list(todo[k:]) + list(todo[:k]):
            seconds = time_once(method, dataset.root, out, shard_size)
            timings[method.role].append(seconds)
            outputs[method.role] = tar_outputs(out)
            remove(out)
            print(f"  {dataset.name:<7} {method.name:<32} round {round_no + 1}/{repeat}: {seconds:7.2f} s", flush=True)
    return [
        Result(dataset.name, m.role, m.name, m.durable, min(timings[m.role]), timings[m.role], *outputs[m.role])
        for m in todo
    ]


def speedup(baseline: Optional[Result], result: Result) -> float:
    """Throughput of ``result`` relative to ``baseline`` (NaN without one)."""
    return baseline.seconds / result.seconds if baseline else float("nan")


def add_ratios(results: List[Result], dataset: Dataset) -> None:
    by_role = {r.role: r for r in results}
    for r in results:
        r.mb_per_s = dataset.payload_bytes / 1e6 / r.seconds
        r.files_per_s = dataset.files / r.seconds
        r.vs_tar = speedup(by_role.get(TAR), r)
        r.vs_tar_sync = speedup(by_role.get(TAR_SYNC), r)
        r.vs_shardwriter = speedup(by_role.get(SHARDWRITER), r)


def goals_for(results: List[Result]) -> List[Goal]:
    """The goal checks whose subject and baseline were both timed."""
    by_role = {r.role: r for r in results}
    goals = []
    for spec in GOAL_SPECS:
        subject, baseline = by_role.get(spec.subject_role), by_role.get(spec.baseline_role)
        if subject is not None and baseline is not None:
            goals.append(Goal(subject.dataset, spec.subject, spec.baseline, speedup(baseline, subject), spec.goal))
    return goals


# ------------------------------------------------------------------- output


def format_table(results: Sequence[Result]) -> str:
    header = ["dataset", "method", "durable", "seconds", "MB/s", "files/s", "vs tar", "vs tar+sync", "vs ShardWriter", "tars"]
    rows = [
        [
            r.dataset,
            r.method,
            "yes" if r.durable else "no",
            f"{r.seconds:.2f}",
            f"{r.mb_per_s:.1f}",
            f"{r.files_per_s:,.0f}",
            f"{r.vs_tar:.2f}x",
            f"{r.vs_tar_sync:.2f}x",
            f"{r.vs_shardwriter:.2f}x",
            str(r.tars),
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    left = {0, 1, 2}

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule] + [fmt(row) for row in rows])


def first_line(argv: Sequence[str]) -> Optional[str]:
    """First line a command prints, or None when it fails or prints nothing."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError:
        return None
    lines = done.stdout.splitlines()
    return lines[0] if done.returncode == 0 and lines else None


def packer_revision() -> str:
    """Commit of this checkout, marked when packer/ has uncommitted changes."""
    git = ["git", "-C", str(REPO_ROOT)]
    commit = first_line(git + ["rev-parse", "--short", "HEAD"])
    if commit is None:
        return "unknown revision"
    dirty = first_line(git + ["status", "--porcelain", "--", "packer"]) is not None
    return commit + (" + uncommitted changes in packer/" if dirty else "")


def environment() -> Dict[str, object]:
    import webdataset

    return {
        "revision": packer_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packer": packer.__version__,
        "webdataset": getattr(webdataset, "__version__", "?"),
        "tar": first_line(["tar", "--version"]) or "tar (version unknown)",
    }


# --------------------------------------------------------------------- main


def size_argument(text: str) -> int:
    try:
        return packer.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_pack.py",
        description=(
            "Pack the same synthetic source trees with the packer (1 worker and all cores, with "
            "its default fsync; all cores again with fsync=False), GNU tar (plain, and followed by "
            "an fsync of its output inside the timing) and webdataset.ShardWriter in one run, and "
            "print throughput ratios against the tar, tar + sync and ShardWriter baselines measured "
            "in that same run."
        ),
        epilog=(
            f"Datasets at --scale 1: 'images' = {IMAGE_SAMPLES} samples of a ~40 kB JPEG + small JSON "
            f"(~790 MB), 'small' = {BLOB_FILES} files of {BLOB_SIZE} bytes (~120 MB). "
            "Compare like with like: the default packer flushes its shards to disk (durable), as "
            "does 'GNU tar + sync'; plain GNU tar, ShardWriter and the packer with no fsync may "
            "return with their output still in the page cache. "
            f"Goals: packer on all cores >= {GOAL_VS_SHARDWRITER:g}x ShardWriter and "
            f">= {GOAL_VS_TAR_SYNC:g}x GNU tar + sync (durable vs durable); packer on all cores "
            f"with no fsync >= {GOAL_VS_TAR:g}x plain GNU tar (neither durable). "
            "The exit status is 0 whether or not the goals are met."
        ),
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, metavar="X",
        help="multiply the number of samples of every dataset by X (default: 1.0; 0.1 for a quick smoke run)",
    )
    parser.add_argument(
        "--repeat", type=int, default=DEFAULT_REPEAT, metavar="N",
        help=f"time every method N times and keep the best (default: {DEFAULT_REPEAT})",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, metavar="DIR",
        help="make a fresh temporary directory inside DIR for the source trees and outputs "
        "(default: the system temp dir); it is removed at the end unless --keep",
    )
    parser.add_argument(
        "--keep", action="store_true",
        help="keep the temporary directory with the source trees at the end (outputs are always deleted)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH",
        help="also save settings, environment, every timing and the goal checks as JSON to PATH",
    )
    parser.add_argument(
        "--shard-size", type=size_argument, default=DEFAULT_SHARD_SIZE, metavar="SIZE",
        help="shard size for the packer and ShardWriter's maxsize, e.g. 16MB or 64MiB (default: 16MB)",
    )
    parser.add_argument(
        "--dataset", choices=sorted(DATASET_MAKERS), action="append", default=None,
        help="benchmark only this dataset; repeat the option for several (default: all)",
    )
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if shutil.which("tar") is None:
        parser.error("GNU tar is needed on PATH as a baseline")
    args.dataset = list(dict.fromkeys(args.dataset or DATASET_MAKERS))  # in order, without repeats
    return args


def print_header(env: Dict[str, object], work: Path, args: argparse.Namespace) -> None:
    print(f"packer {env['packer']} ({env['revision']}), webdataset {env['webdataset']}, {env['tar']}, "
          f"Python {env['python']}, {env['cpu_count']} CPUs")
    print(f"work dir {work}; shard size {packer.format_size(args.shard_size)} ({args.shard_size} bytes); "
          f"best of {args.repeat}; scale {args.scale:g}", flush=True)


def print_report(results: Sequence[Result], goals: Sequence[Goal], args: argparse.Namespace) -> None:
    print()
    print(f"shard size {packer.format_size(args.shard_size)}; best of {args.repeat}; "
          "MB = 10**6 bytes of source payload; ratios are throughput relative to the baseline in this run; "
          "durable = output fsynced before the timing ends")
    print(format_table(results))
    print()
    for goal in goals:
        print(goal.line())


def prepare_dataset(name: str, work: Path, scale: float) -> Dataset:
    """Make a dataset's source tree, then read it once to warm the page cache."""
    start = time.perf_counter()
    dataset = DATASET_MAKERS[name](work / f"src-{name}", scale)
    warm_cache(dataset)
    print(f"{name}: {dataset.description}; {dataset.files} files, {packer.format_size(dataset.payload_bytes)} "
          f"payload (made and read in {time.perf_counter() - start:.1f} s)", flush=True)
    return dataset


def run(args: argparse.Namespace) -> Dict[str, object]:
    """Make the datasets, time every method on each, print and return the results."""
    start = time.perf_counter()
    todo = methods(os.cpu_count() or 1)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_pack-", dir=args.workdir))
    env = environment()
    print_header(env, work, args)
    datasets: List[Dataset] = []
    results: List[Result] = []
    goals: List[Goal] = []
    try:
        for name in args.dataset:
            dataset = prepare_dataset(name, work, args.scale)
            datasets.append(dataset)
            found = bench_dataset(dataset, todo, work / "out", args.shard_size, args.repeat)
            add_ratios(found, dataset)
            results.extend(found)
            goals.extend(goals_for(found))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_report(results, goals, args)
    total = time.perf_counter() - start
    print(f"\ntotal runtime {total:.1f} s")
    return {
        "settings": {"scale": args.scale, "repeat": args.repeat, "shard_size": args.shard_size, "datasets": args.dataset},
        "environment": env,
        "datasets": [{**asdict(d), "root": str(d.root)} for d in datasets],
        "results": [asdict(r) for r in results],
        "goals": [asdict(g) for g in goals],
        "total_seconds": total,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
