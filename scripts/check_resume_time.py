#!/usr/bin/env python3
"""Time to resume from the middle of a 1,000,000-sample epoch.

Why this exists
---------------
A loader state is ``(epoch, position)`` plus checks (``loaders/state.py``):
resuming is arithmetic on the index, with no reading and throwing away of
the samples consumed before.  This script shows it on a dataset big enough
for a skip-by-reading approach to be obviously slow: 1,000,000 samples of
16 bytes (made and packed as by ``scripts/check_indexed_memory.py``, whose
dataset it reuses from ``--workdir``).

What is timed
-------------
For each loader (``StreamingTarDataset`` batched in its pipeline, and
``IndexedTarDataset`` with ``ShardAwareSampler``) in a ``ResumableLoader``,
for each cluster shape (``--shapes``: world size x rank, e.g. ``1x0`` and
``8x5``) and DataLoader worker count (``--workers``), a fresh interpreter:

1. opens the dataset (timed apart: "open");
2. loads a state saved at position ``--position`` (default: the middle of
   the epoch, rounded to a whole global batch) of epoch 3, and takes the
   first batch: "resume" is the time from ``load_state_dict`` to that first
   batch in hand, DataLoader worker start-up included.

The first sample of the batch must be the sample at the resume position
of that rank in the epoch's global order (computed independently from
``EpochOrder``), or the run fails.  The bound from the issue is 1 s.

How to read the output
----------------------
One line per run: loader, shape, workers, open and resume seconds, PASS or
FAIL against the bound.  Exit status 0 when every run passes.
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
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BOUND_S = 1.0
EPOCH = 3


def child(dst: str, loader_kind: str, world: int, rank: int, workers: int, batch: int, position: int) -> dict:
    """Runs in a fresh interpreter: open, resume, first batch."""
    import numpy as np

    from loaders import IndexedTarDataset, ResumableLoader, ShardAwareSampler, StreamingTarDataset

    def index_of(sample):
        return sample["__index__"]

    start = time.perf_counter()
    if loader_kind == "streaming":
        dataset = StreamingTarDataset(dst, seed=0, rank=rank, world_size=world, transform=index_of)
        loader = ResumableLoader(dataset.batched(batch, collation_fn=np.array), batch_size=None, num_workers=workers)
        target = dataset
    else:
        dataset = IndexedTarDataset(dst, transform=index_of)
        sampler = ShardAwareSampler(dataset, seed=0, rank=rank, world_size=world, batch_size=batch)
        loader = ResumableLoader(dataset, sampler=sampler, batch_size=batch, num_workers=workers, collate_fn=np.array)
        target = sampler
    opened = time.perf_counter() - start
    # The state a job saved at `position` (what any rank's state_dict() returns there).
    state = target.state_for(EPOCH, 0, 0)
    state.update(position=position)
    start = time.perf_counter()
    loader.load_state_dict(state)
    first = next(iter(loader))
    resumed = time.perf_counter() - start
    return {"open_s": opened, "resume_s": resumed, "first": int(first[0]), "batch": len(first)}


def expected_first(dst: Path, world: int, rank: int, batch: int, position: int) -> int:
    """Sample at rank ``rank``'s first position after ``position`` (pure arithmetic)."""
    import numpy as np

    from loaders import EpochOrder
    from packer.index import PackedIndex

    index = PackedIndex(dst)
    counts = np.bincount(index.sample_shard, minlength=index.num_shards)
    order = EpochOrder.build(counts, seed=0, epoch=EPOCH, shuffle=True, chunk_samples=128, window_samples=1024)
    return int(order.at(np.array([position + rank * batch]))[0])


def run(dst: Path, kind: str, world: int, rank: int, workers: int, batch: int, position: int) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import check_resume_time as c; "
        "print(json.dumps(c.child(*sys.argv[2:4], *map(int, sys.argv[4:]))))"
    )
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [sys.executable, "-c", code, here, str(dst), kind, str(world), str(rank), str(workers), str(batch), str(position)],
        check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(here).parent)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring for what is timed.")
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples in the dataset (default: 1000000)")
    parser.add_argument("--workdir", type=Path, default=None, help="work directory; DIR/packed is reused (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the packed dataset")
    parser.add_argument("--shapes", default="1x0,8x5", help="world size x rank, comma-separated (default: 1x0,8x5)")
    parser.add_argument("--workers", default="0,2", help="DataLoader workers, comma-separated (default: 0,2)")
    parser.add_argument("--batch-size", type=int, default=256, help="per-rank batch size (default: 256)")
    parser.add_argument("--position", type=int, default=None, help="resume position (default: mid-epoch, whole global batches)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from check_indexed_memory import prepare_dataset

    args = parse_args(argv)
    made_work = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="resume-time-")) if made_work else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    made = False
    dst = work / "packed"
    try:
        dst, made = prepare_dataset(work, args.samples, None, 2)
        shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
        ok = True
        for world, rank in shapes:
            step = world * args.batch_size
            position = args.position if args.position is not None else (args.samples // 2) // step * step
            expected = expected_first(dst, world, rank, args.batch_size, position)
            for workers in [int(w) for w in args.workers.split(",")]:
                for kind in ("streaming", "indexed"):
                    result = run(dst, kind, world, rank, workers, args.batch_size, position)
                    good = result["first"] == expected and result["resume_s"] < BOUND_S
                    ok &= good
                    line = (f"{kind:9s} world {world} rank {rank} workers {workers}: open {result['open_s']:.3f} s, "
                            f"resume at position {position:,} -> first batch in {result['resume_s']:.3f} s "
                            f"(first sample {result['first']}, expected {expected}) {'PASS' if good else 'FAIL'}")
                    print(line, flush=True)
        print(f"summary: {'PASS' if ok else 'FAIL'} (bound {BOUND_S} s)")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {dst}")
        elif made_work:
            shutil.rmtree(work, ignore_errors=True)
        elif made:
            shutil.rmtree(dst, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
