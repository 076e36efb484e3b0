"""Command line: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 ok, 1 failure (bad data, failed check), 2 usage (arguments
that cannot work).  A user mistake never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from . import __version__
from .errors import PackerError, UsageError

_BUILD_EPILOG = """\
examples:
  python -m packer build train/ shards/                  # 256 MB shards
  python -m packer build train/ shards/ --num-shards 64  # exactly 64 shards
  python -m packer build rows/ shards/ --rows --shard-size 1GiB --workers 8   # .pt/.npy files: one sample per row

Each file SRC/a/b/x.jpg becomes member a/b/x.jpg of sample a/b/x; files that
share a path without extension form one sample.  Dots in the stem are written
as %2E and '%' as %25 so WebDataset readers split names correctly
(IMG_1.v2.jpg -> IMG_1%2Ev2.jpg); see docs/format.md.  Hidden files, files
without extension, symlinks to directories and special files are skipped and
listed in index.json.  Output: DST/shard-NNNNNN.tar, DST/index.json (written
last), DST/index/ (binary per-sample index) and DST/wids.json.
"""


def _size(text: str) -> int:
    from .units import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m packer",
        description="Pack many small files into size-balanced, indexed WebDataset tar shards.",
    )
    parser.add_argument("--version", action="version", version=f"packer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    cpus = os.cpu_count() or 1

    build = commands.add_parser(
        "build",
        help="pack a directory tree into shards plus an index",
        description="Pack the files under SRC into size-balanced tar shards plus an index in DST.",
        epilog=_BUILD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("src", metavar="SRC", help="directory tree of source files")
    build.add_argument("dst", metavar="DST", help="output directory (created; must be empty unless --overwrite)")
    size = build.add_mutually_exclusive_group()
    size.add_argument(
        "--shard-size", type=_size, metavar="SIZE",
        help="target shard size, counting tar headers and padding; e.g. 256MB, 1GiB, 64000000 "
        "(default: 256MB). A sample larger than SIZE gets a shard of its own, with a warning.",
    )
    size.add_argument("--num-shards", type=_positive_int, metavar="N", help="make exactly N shards of equal size instead")
    build.add_argument("--seed", type=int, default=0, help="seed of the sample shuffle before the split (default: 0)")
    build.add_argument(
        "--no-shuffle", dest="shuffle", action="store_false",
        help="keep the sorted scan order instead of shuffling (shards then hold e.g. one class each)",
    )
    build.add_argument(
        "--workers", type=_positive_int, default=cpus,
        help=f"processes writing shards in parallel; output is identical for any value (default: all cores, {cpus})",
    )
    build.add_argument(
        "--key-rule", choices=("last-dot", "first-dot"), default="last-dot",
        help="where a file's extension starts: after the last dot of its name (x.v2.jpg -> sample x.v2, "
        "written x%%2Ev2, extension jpg) or after the first (x.seg.png -> sample x, extension seg.png, for trees already "
        "laid out WebDataset-style) (default: last-dot)",
    )
    build.add_argument(
        "--rows", action="store_true",
        help="treat .pt/.pth/.npy/.npz files as containers of rows: row i of a/b.pt becomes sample "
        "a/b%%2Ept/00000i with one .npy member per field (.cls for integer labels); see docs/format.md "
        "(default: pack them as ordinary files)",
    )
    build.add_argument(
        "--labels-from-dir", action="store_true",
        help="add a .cls member to every sample: the index of its first-level directory among all of them "
        "in sorted order, as torchvision's ImageFolder numbers classes; the class list goes into index.json",
    )
    build.add_argument("--include-hidden", action="store_true", help="pack files and directories whose names start with '.' (default: skip and list them)")
    build.add_argument(
        "--on-error", choices=("stop", "skip"), default="stop",
        help="on an unreadable, vanished, changed or badly named file: stop with an error, or skip the "
        "sample and list it in index.json (default: stop)",
    )
    build.add_argument("--overwrite", action="store_true", help="replace a previous build in DST (refuses to delete anything else)")
    build.add_argument(
        "--resume", action="store_true",
        help="finish an interrupted build: run the same command again with --resume (same SRC, DST and "
        "options); keeps every finished shard whose hash still matches the saved plan, writes the rest; "
        "refuses, saying what differs, if the options or SRC changed since",
    )
    build.add_argument("--prefix", default="shard", help="shard file name prefix: PREFIX-000000.tar (default: shard)")
    build.add_argument("--dali-index", action="store_true", help="also write an NVIDIA DALI index (v1.2) beside each shard: PREFIX-000000.idx")
    build.add_argument(
        "--no-fsync", dest="fsync", action="store_false",
        help="do not flush shards to disk before index.json is written: faster, but a power loss may leave a "
        "dataset that looks complete with shards the disk never received (default: flush)",
    )
    build.add_argument("--quiet", "-q", action="store_true", help="no progress bars (the summary is still printed)")

    verify = commands.add_parser(
        "verify",
        help="re-hash shards and check the index against the tar headers",
        description="Re-hash every shard against index.json and check every index entry against the tar "
        "headers. Exits 1 naming each shard that differs.",
    )
    verify.add_argument("dst", metavar="DST", help="a dataset directory made by 'build'")
    verify.add_argument("--workers", type=_positive_int, default=cpus, help=f"shards checked in parallel (default: all cores, {cpus})")
    verify.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    info = commands.add_parser("info", help="summarize a dataset", description="Print a summary of a dataset made by 'build'.")
    info.add_argument("dst", metavar="DST", help="a dataset directory made by 'build'")
    info.add_argument("--json", action="store_true", help="print the summary as JSON instead of text")
    return parser


def _run_build(args: argparse.Namespace) -> int:
    from .build import BuildOptions, build
    from .units import format_size

    options = BuildOptions(
        shard_size=args.shard_size,
        num_shards=args.num_shards,
        seed=args.seed,
        shuffle=args.shuffle,
        workers=args.workers,
        key_rule=args.key_rule,
        include_hidden=args.include_hidden,
        on_error=args.on_error,
        overwrite=args.overwrite,
        dali_index=args.dali_index,
        prefix=args.prefix,
        quiet=args.quiet,
        fsync=args.fsync,
        rows=args.rows,
        labels_from_dir=args.labels_from_dir,
    )
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other")
    if args.resume:
        from .resume import resume_build

        report = resume_build(args.src, args.dst, options)
    else:
        report = build(args.src, args.dst, options)
    if report.note:
        print(f"{args.dst}: {report.note}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    manifest, sizes = report.manifest, report.shard_sizes
    if not args.resume:
        timing = f" in {report.seconds:.2f} s ({format_size(report.source_bytes / max(report.seconds, 1e-9))}/s)"
    else:  # it packed only part of the bytes: no rate (and no time at all when there was nothing to do)
        timing = f" in {report.seconds:.2f} s" if report.seconds > 0 else ""
    print(
        f"packed {manifest['num_samples']:,} samples ({manifest['num_members']:,} files, "
        f"{format_size(report.source_bytes)}) into {len(sizes):,} shard{'s' if len(sizes) != 1 else ''} in {args.dst}"
        f"{timing}"
    )
    print(f"shard sizes {format_size(min(sizes))} .. {format_size(max(sizes))} (max/min {max(sizes) / min(sizes):.3f})")
    if manifest["skipped"]:
        first = manifest["skipped"][0]
        print(
            f"skipped {len(manifest['skipped']):,} entries, e.g. {printable(first['path'])} ({first['reason']}); "
            f"all are listed under \"skipped\" in {os.path.join(args.dst, 'index.json')}"
        )
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from .verify import verify_dataset

    problems = verify_dataset(args.dst, workers=args.workers, quiet=args.quiet)
    for problem in problems:
        print(f"FAILED {printable(problem)}", file=sys.stderr)
    if problems:
        bad = len({p.split(":", 1)[0] for p in problems})
        print(f"verify: {bad} shard(s) differ from the index", file=sys.stderr)
        return 1
    print(f"verify: {args.dst} is intact")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from .info import format_summary, summarize

    summary = summarize(args.dst)
    print(json.dumps(summary, indent=1, ensure_ascii=False) if args.json else format_summary(summary))
    return 0


def printable(text: str) -> str:
    """``text`` with control characters escaped, so one message is one line
    and a file name cannot forge output lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _check_dataset_argument(dst: str) -> None:
    """A path that is no dataset at all is a usage error (2); a dataset
    whose build did not finish is a failure (1), reported by the command."""
    from .index import MANIFEST_FILE, PLAN_DIR

    if not os.path.isdir(dst):
        raise UsageError(f"{dst}: {'not a directory (pass the dataset directory)' if os.path.exists(dst) else 'no such directory'}")
    if not os.path.exists(os.path.join(dst, MANIFEST_FILE)) and not os.path.isdir(os.path.join(dst, PLAN_DIR)):
        raise UsageError(f"{dst}: no {MANIFEST_FILE} (not a dataset made by packer build)")


def _resume_hint(args: argparse.Namespace) -> str:
    """What to do after a build was interrupted: resume it once its plan
    is saved; before that nothing of it was written (with --overwrite, the
    previous dataset may still be there), so run it again."""
    from .index import PLAN_DIR

    if not os.path.isdir(os.path.join(args.dst, PLAN_DIR)):
        return "; nothing was written yet: run the same command again"
    if args.overwrite:
        return "; run the same command with --resume instead of --overwrite to finish the build"
    return "; run the same command with --resume to finish the build"


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command in ("verify", "info"):
            _check_dataset_argument(args.dst)
        return {"build": _run_build, "verify": _run_verify, "info": _run_info}[args.command](args)
    except BrokenPipeError:  # e.g. `packer info --json | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except PackerError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # disk full, file too large, name too long, I/O error
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {printable(where + (exc.strerror or str(exc)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(args) if args.command == 'build' else ''}", file=sys.stderr)
        return 130
