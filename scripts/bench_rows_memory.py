"""Peak memory of packing one large .npy of rows (``--rows``).

Why: a row container must never be loaded whole, in the packer or in any of
its worker processes.  This script writes a single ``.npy`` of float32 rows
(2 GB by default), packs it with ``python -m packer build --rows`` in a
child process, and reports the largest resident set size any process of
the build reached (``ru_maxrss`` of the build process and of its writer
processes), against the 500 MB bound.

    python scripts/bench_rows_memory.py            # 2 GB, all cores
    python scripts/bench_rows_memory.py --gb 0.2   # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BOUND_MB = 500
# The build runs in a fresh interpreter that reports its own peak and that of
# its writer processes.  (Measuring from this process would be wrong: a child
# forked from it starts with this process's resident pages, which writing the
# .npy made large.)
_MEASURED_BUILD = """
import resource, sys
from packer.cli import main
code = main(["build", *sys.argv[1:]])
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print("peak_kb", peak)
sys.exit(code)
"""
ROW_FLOATS = 1024  # 4 kB rows


def make_npy(path: Path, gigabytes: float) -> int:
    """A float32 ``.npy`` of ``gigabytes`` GB (row i holds the value i)."""
    rows = int(gigabytes * 1e9) // (ROW_FLOATS * 4)
    # Plain chunked writes, not a memory map: this process must stay small,
    # because the build is started from it and Linux carries a process's
    # peak RSS across fork and exec into the child's ru_maxrss.
    chunk = 16384
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (rows, ROW_FLOATS)})
        for start in range(0, rows, chunk):
            stop = min(rows, start + chunk)
            f.write(np.repeat(np.arange(start, stop, dtype=np.float32)[:, None], ROW_FLOATS, axis=1).tobytes())
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0, help="size of the .npy in GB (default: 2)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="packer --workers (default: all cores)")
    parser.add_argument("--workdir", default=None, help="where to write the .npy and the shards (default: a temp dir)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rows-memory-", dir=args.workdir))
    try:
        (work / "src").mkdir()
        rows = make_npy(work / "src" / "big.npy", args.gb)
        size = (work / "src" / "big.npy").stat().st_size
        build_args = [str(work / "src"), str(work / "dst"), "--rows", "--quiet", "--workers", str(args.workers), "--shard-size", "256MB"]
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", _MEASURED_BUILD, *build_args], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return 1
        *summary, peak_line = result.stdout.strip().splitlines()
        peak_mb = int(peak_line.split()[-1]) / 1024
        print("\n".join(summary))
        print(f"source: one .npy of {rows:,} rows x {ROW_FLOATS} float32 = {size / 1e9:.2f} GB; workers {args.workers}")
        print(f"packed in {seconds:.1f} s ({size / 1e6 / seconds:.0f} MB/s)")
        verdict = "PASS" if peak_mb < BOUND_MB else "FAIL"
        print(f"peak RSS of any build process: {peak_mb:.0f} MB (bound {BOUND_MB} MB) {verdict}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
