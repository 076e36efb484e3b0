#!/usr/bin/env python3
"""Cold-cache random access with and without read-ahead, on a real dataset.

Why this exists
---------------
``IndexedTarDataset(read_ahead="auto")`` asks the kernel to read each shard
whole into the page cache at its first use.  Whether that pays depends on
the storage, so this script measures it where it matters: on a packed
dataset directory you already have (``DATASET``), whose shards were not
just written (a freshly written file may still sit in a cache below this
machine, in a VM host's for example, which makes "cold" reads look cheap).

For each round and each setting (``read_ahead=False``, then ``True``), it
drops the shards from the page cache with ``posix_fadvise(DONTNEED)``
(twice, half a second apart, so that read-ahead still in flight is dropped
too), checks with ``fincore`` (if installed) that they are gone, then times
one pass over all samples in a shuffled order, fetched in batches of
``--batch-size`` as a DataLoader with 0 workers does.  It prints samples/s
per pass and the ratio of the best rates.  Pages must be clean to be
dropped, so the shards are fsynced first.

Usage::

    .venv/bin/python scripts/check_read_ahead.py shards/ --rounds 3
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # measure the loaders of this checkout


def drop_from_cache(paths: Sequence[str]) -> None:
    """Flush and drop ``paths`` from the page cache, twice half a second
    apart: pages whose read-ahead is still in flight cannot be dropped
    until it lands."""
    for attempt in range(2):
        if attempt:
            time.sleep(0.5)
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def resident_bytes(paths: Sequence[str]) -> Optional[int]:
    """Bytes of ``paths`` in the page cache, by ``fincore``; None without it."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *paths],
                         capture_output=True, text=True, check=True)
    return sum(int(line) for line in out.stdout.split())


def one_pass(root: str, read_ahead: bool, order: List[int], batch_size: int) -> float:
    from loaders import IndexedTarDataset

    dataset = IndexedTarDataset(root, read_ahead=read_ahead)
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        dataset.__getitems__(order[i : i + batch_size])
    seconds = time.perf_counter() - start
    dataset.close()
    return len(order) / seconds


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Each pass first fsyncs the shards and drops them from the page cache; with fincore "
               "(util-linux) installed, the bytes still cached before each pass are shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("dataset", help="a directory made by 'python -m packer build'")
    parser.add_argument("--rounds", type=int, default=3, help="passes per setting; the best is kept")
    parser.add_argument("--batch-size", type=int, default=256, help="samples fetched per __getitems__ call, as a DataLoader batch")
    parser.add_argument("--max-samples", type=int, default=200_000, help="read at most this many samples per pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order")
    args = parser.parse_args(argv)
    if not hasattr(os, "posix_fadvise"):
        parser.error("needs os.posix_fadvise (Linux)")
    if args.rounds < 1 or args.batch_size < 1 or args.max_samples < 1:
        parser.error("--rounds, --batch-size and --max-samples must be at least 1")
    from loaders import IndexedTarDataset

    try:
        dataset = IndexedTarDataset(args.dataset, read_ahead=False)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = list(dataset.index.shard_paths)
    total = sum(dataset.index.shard_bytes)
    order = list(range(len(dataset)))
    random.Random(args.seed).shuffle(order)
    order = order[: args.max_samples]
    dataset.close()
    print(f"{args.dataset}: {len(paths)} shard{'s' if len(paths) != 1 else ''}, {total / 1e6:,.0f} MB; "
          f"{len(order):,} samples per pass in a shuffled order")
    best = {False: 0.0, True: 0.0}
    for round_ in range(1, args.rounds + 1):
        for read_ahead in (False, True):
            drop_from_cache(paths)
            left = resident_bytes(paths)
            rate = one_pass(args.dataset, read_ahead, order, args.batch_size)
            best[read_ahead] = max(best[read_ahead], rate)
            note = "" if left is None else f", {left / 1e6:.1f} MB still cached before the pass"
            print(f"  round {round_}: read_ahead={read_ahead!s:5}  {rate:12,.0f} samples/s{note}")
    print(f"best: read_ahead=True {best[True]:,.0f}/s, False {best[False]:,.0f}/s: {best[True] / best[False]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
