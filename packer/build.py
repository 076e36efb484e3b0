"""The build in three steps, each resumable on its own.

1. :func:`plan_build`: scan SRC, shuffle, cut into balanced shards, and save
   the plan (every sample's shard and each source file's size and mtime) in
   ``DST/.plan`` before any shard is written.
2. :func:`write_planned`: write shards from the saved plan, in parallel; each
   finished shard leaves a small record beside the plan.
3. :func:`finalize_build`: compute the index from the plan and the records,
   write it, and write ``index.json`` last.

:func:`build` runs all three.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import __version__
from .errors import PackerError, UsageError
from .index import (
    INDEX_DIR,
    MANIFEST_FILE,
    PLAN_DIR,
    PLAN_FILE,
    WIDS_FILE,
    ShardInfo,
    atomic_write_bytes,
    fsync_directory,
    dali_index_path,
    dali_index_text,
    load_plan,
    load_shard_records,
    read_manifest,
    save_plan,
    shard_name,
    temp_target,
    write_index,
)
from .layout import compute_layout
from .names import KEY_RULES, member_name
from .plan import DEFAULT_SEED, plan_shards, shuffle_order
from .progress import progress_bar
from .scan import ON_ERROR_CHOICES, scan_tree
from .table import SampleTable, drop_unused_extensions, keep_samples
from .units import format_size
from .write import write_shards

DEFAULT_SHARD_SIZE = 256 * 10**6


def usable_cpus() -> int:
    """CPUs this process may run on (affinity and cpusets), not the host's count."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass
class BuildOptions:
    """Settings of a build; see ``python -m packer build --help``."""

    shard_size: Optional[int] = None  # bytes; DEFAULT_SHARD_SIZE when neither is given
    num_shards: Optional[int] = None
    seed: int = DEFAULT_SEED
    shuffle: bool = True
    workers: int = field(default_factory=lambda: usable_cpus())
    key_rule: str = "last-dot"
    include_hidden: bool = False
    on_error: str = "stop"
    overwrite: bool = False
    dali_index: bool = False
    prefix: str = "shard"
    quiet: bool = False
    fsync: bool = True
    rows: bool = False
    labels_from_dir: bool = False

    def check(self) -> None:
        if self.shard_size is not None and self.num_shards is not None:
            raise UsageError("give --shard-size or --num-shards, not both")
        if self.shard_size is None and self.num_shards is None:
            self.shard_size = DEFAULT_SHARD_SIZE
        if self.shard_size is not None and self.shard_size <= 1024:
            raise UsageError(f"--shard-size must be larger than 1024 bytes, got {self.shard_size}")
        if self.num_shards is not None and self.num_shards < 1:
            raise UsageError(f"--num-shards must be at least 1, got {self.num_shards}")
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.key_rule not in KEY_RULES:
            raise UsageError(f"--key-rule must be one of {', '.join(KEY_RULES)}")
        if self.on_error not in ON_ERROR_CHOICES:
            raise UsageError(f"--on-error must be one of {', '.join(ON_ERROR_CHOICES)}")
        if not self.prefix or "/" in self.prefix or self.prefix.startswith(".") or not self.prefix.isprintable():
            raise UsageError(f"--prefix must be a plain file name prefix, got {self.prefix!r}")
        if len(self.prefix.encode("utf-8")) > 200:
            raise UsageError("--prefix is longer than 200 bytes; shard file names would exceed file system limits")

    def settings(self) -> Dict[str, Any]:
        """What the manifest records: everything that shapes the output."""
        recorded = asdict(self)
        for transient in ("workers", "overwrite", "quiet", "fsync"):
            recorded.pop(transient)
        return recorded


@dataclass
class BuildReport:
    """What a finished build made; the CLI prints it."""

    dst: Path
    manifest: Dict[str, Any]
    seconds: float
    source_bytes: int
    warnings: List[str]
    note: str = ""  # e.g. "resumed"

    @property
    def shard_sizes(self) -> List[int]:
        return [s["num_bytes"] for s in self.manifest["shards"]]


# ------------------------------------------------------------------ checks


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _previous_build_files(dst: Path) -> set:
    """Names in DST that a previous build made, from its manifest or plan.

    Only what the previous build recorded counts: its shards (and the DALI
    indexes and tar-index caches beside them), the index files, the plan,
    and temporary files of those names.  A ``*.tar`` that no manifest lists
    is not ours to delete.
    """
    shards: List[str] = []
    if (dst / MANIFEST_FILE).exists():
        try:
            shards = [s["name"] for s in read_manifest(dst)["shards"]]
        except (PackerError, KeyError, TypeError):
            shards = []
    if (dst / PLAN_DIR / PLAN_FILE).exists():
        try:
            shards += json.loads((dst / PLAN_DIR / PLAN_FILE).read_text("utf-8"))["shard_names"]
        except (OSError, ValueError, KeyError):
            pass
    if not shards and not (dst / PLAN_DIR).exists():
        return set()
    names = {MANIFEST_FILE, INDEX_DIR, WIDS_FILE, PLAN_DIR}
    for shard in shards:
        names |= {shard, str(Path(shard).with_suffix(".idx")), shard + ".pkidx.npz"}
    return names


def check_paths(src: Path, dst: Path, overwrite: bool) -> List[Path]:
    """Refuse SRC/DST combinations that cannot work; return what an
    ``--overwrite`` will delete (nothing is deleted here)."""
    if not src.exists():
        raise UsageError(f"{src}: source directory does not exist")
    if not src.is_dir():
        raise UsageError(f"{src}: source is not a directory")
    real_src, real_dst = src.resolve(), dst.resolve()
    if _is_within(real_dst, real_src):
        raise UsageError(f"{dst}: destination is inside the source directory {src}")
    if _is_within(real_src, real_dst):
        raise UsageError(f"{dst}: destination contains the source directory {src}")
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"{dst}: destination exists and is not a directory")
    if not dst.is_dir():
        return []
    entries = sorted(os.listdir(dst))
    if not entries:
        return []
    if not overwrite:
        if PLAN_DIR in entries:
            raise UsageError(f"{dst}: destination holds an unfinished build; add --resume to finish it "
                             "(keeping its finished shards), or --overwrite to start again")
        raise UsageError(f"{dst}: destination is not empty; use --overwrite to replace a previous build")
    ours = _previous_build_files(dst)
    if not ours:
        raise UsageError(f"{dst}: --overwrite only replaces a previous build, and this directory holds none")
    foreign = [e for e in entries if e not in ours and temp_target(e) not in ours]
    if foreign:
        raise UsageError(f"{dst / foreign[0]}: --overwrite only replaces a previous build, and this is not part of one")
    return [dst / e for e in entries]


def clear_and_create(dst: Path, old: Sequence[Path]) -> None:
    """Delete a previous build's files (already checked) and create DST."""
    for path in old:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PackerError(f"{dst}: cannot create destination: {exc.strerror}") from None
    if not os.access(dst, os.W_OK):
        raise PackerError(f"{dst}: destination is not writable")


def _check_dali_names(table: SampleTable) -> None:
    """DALI's index separates fields by spaces, so names must not hold any."""
    blank = np.isin(np.asarray(table.keys), np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8))
    if blank.any():
        pos = int(np.flatnonzero(blank)[0])
        i = int(np.searchsorted(table.key_offsets, pos, side="right")) - 1
        raise UsageError(f"--dali-index: key {table.key(i)!r} contains white space, which DALI index files cannot hold")
    for ext in table.extensions:
        if any(c.isspace() for c in ext):
            raise UsageError(f"--dali-index: extension {ext!r} contains white space, which DALI index files cannot hold")


# ------------------------------------------------------------------- steps


def plan_build(src: os.PathLike | str, dst: os.PathLike | str, options: BuildOptions) -> Dict[str, Any]:
    """Step 1: scan, plan and save the plan in ``DST/.plan``; returns its metadata."""
    options.check()
    src, dst = Path(src), Path(dst)
    old = check_paths(src, dst, options.overwrite)
    with progress_bar(options.quiet, desc="scanning", unit=" entries") as bar:
        scanned = scan_tree(
            src,
            key_rule=options.key_rule,
            include_hidden=options.include_hidden,
            on_error=options.on_error,
            progress=bar.update,
            workers=options.workers,
            rows=options.rows,
            labels_from_dir=options.labels_from_dir,
        )
    table = scanned.table
    skipped = [{"path": s.path, "reason": s.reason} for s in scanned.skipped]
    if table.num_samples == 0:
        detail = f" ({len(skipped)} entries skipped, e.g. {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise PackerError(f"{src}: no samples found{detail}")
    if options.num_shards is not None and options.num_shards > table.num_samples:
        raise UsageError(f"--num-shards {options.num_shards} is more than the {table.num_samples} samples found")
    if options.dali_index:
        _check_dali_names(table)
    order = shuffle_order(table.keys, table.key_offsets, options.seed) if options.shuffle else np.arange(table.num_samples)
    sample_bytes = table.sample_bytes()
    plan = plan_shards(
        sample_bytes, order, shard_size=options.shard_size, num_shards=options.num_shards, keep_order=not options.shuffle
    )
    ordered = table.take(plan.order)
    warnings = list(scanned.warnings)
    for shard in plan.oversized:
        i = int(plan.bounds[shard])
        warnings.append(
            f"sample {ordered.key(i)!r} is {format_size(int(sample_bytes[plan.order[i]]))}, larger than "
            f"--shard-size {format_size(options.shard_size or 0)}: it gets a shard of its own"
        )
    names = [shard_name(options.prefix, j, plan.num_shards) for j in range(plan.num_shards)]
    # Every check has passed: only now may a previous build be replaced.
    clear_and_create(dst, old)
    meta = {
        "source": str(src.resolve()),
        "fsync": options.fsync,
        "settings": options.settings(),
        "shard_names": names,
        "skipped": skipped,
        "warnings": warnings,
        "symlinks_followed": scanned.symlinks_followed,
        "classes": scanned.classes,
        "row_dtypes": scanned.row_dtypes,
    }
    save_plan(dst, ordered, plan.bounds, meta)
    return meta


def write_planned(
    dst: os.PathLike | str,
    *,
    workers: int = 1,
    shards: Optional[Sequence[int]] = None,
    quiet: bool = True,
) -> None:
    """Step 2: write ``shards`` (default: all not yet recorded as finished)."""
    dst = Path(dst)
    table, bounds, meta = load_plan(dst)
    if shards is None:
        done = load_shard_records(dst)
        shards = [j for j in range(len(bounds) - 1) if j not in done]
    total = int(table.member_spans().sum()) + 1024 * (len(bounds) - 1)
    with progress_bar(quiet, desc="writing", total=total, unit="B", unit_scale=True, unit_divisor=1000) as bar:

        def on_progress(written: int, samples: int) -> None:
            bar.update(written - bar.n)
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"{samples:,}/{table.num_samples:,} samples", refresh=False)

        write_shards(dst, shards, workers=workers, on_progress=on_progress)


def finalize_build(dst: os.PathLike | str) -> Dict[str, Any]:
    """Step 3: build the index from the plan and shard records; write it last."""
    dst = Path(dst)
    table, bounds, meta = load_plan(dst)
    records = load_shard_records(dst)
    num_shards = len(bounds) - 1
    missing = [meta["shard_names"][j] for j in range(num_shards) if j not in records]
    if missing:
        raise PackerError(f"{dst}: {len(missing)} shard(s) not written yet, first {missing[0]}")
    dropped = np.array(sorted(i for r in records.values() for i in r["dropped"]), dtype=np.int64)
    skipped = list(meta["skipped"]) + [s for j in sorted(records) for s in records[j]["skipped"]]
    if len(dropped):
        keep = np.ones(table.num_samples, dtype=bool)
        keep[dropped] = False
        table = keep_samples(table, keep)
        bounds = bounds - np.searchsorted(dropped, bounds, side="left")
    if table.num_samples == 0:
        first = skipped[0] if skipped else {"path": "?", "reason": "?"}
        raise PackerError(f"{dst}: every sample was skipped, nothing was packed (first: {first['path']}: {first['reason']})")
    table = drop_unused_extensions(table)
    layout = compute_layout(table, bounds)
    shards = []
    for j in range(num_shards):
        record = records[j]
        planned = int(layout.shard_bytes[j])
        try:
            on_disk = (dst / record["name"]).stat().st_size
        except FileNotFoundError:
            raise PackerError(f"{dst / record['name']}: shard recorded as written but missing") from None
        if not planned == record["num_bytes"] == on_disk:
            raise PackerError(
                f"{dst / record['name']}: {on_disk} bytes on disk, {record['num_bytes']} recorded, {planned} planned"
            )
        shards.append(
            ShardInfo(
                name=record["name"],
                num_samples=int(bounds[j + 1] - bounds[j]),
                first_sample=int(bounds[j]),
                num_bytes=record["num_bytes"],
                sha256=record["sha256"],
            )
        )
    index_arrays = {
        "keys": np.asarray(table.keys),
        "key_offsets": np.asarray(table.key_offsets),
        "sample_shard": layout.sample_shard,
        "sample_offset": layout.sample_offset,
        "sample_members": np.asarray(table.sample_members),
        "member_ext": np.asarray(table.member_ext),
        "member_offset": layout.member_offset,
        "member_size": np.asarray(table.member_size),
    }
    if meta["settings"].get("dali_index"):
        _write_dali_indexes(dst, table, layout.member_offset, bounds, shards)
    if meta.get("fsync", True):
        fsync_directory(dst)  # shard renames are durable before index.json says "complete"
    manifest = write_index(
        dst,
        table,
        index_arrays,
        shards,
        settings=meta["settings"],
        skipped=skipped,
        warnings=meta["warnings"],
        created_by=f"packer {__version__}",
        extra={
            **({"classes": meta["classes"]} if meta.get("classes") is not None else {}),
            **({"row_dtypes": meta["row_dtypes"]} if meta.get("row_dtypes") else {}),
        },
    )
    shutil.rmtree(dst / PLAN_DIR)
    return manifest


def _write_dali_indexes(dst: Path, table: SampleTable, member_offset: np.ndarray, bounds: np.ndarray, shards: List[ShardInfo]) -> None:
    sample_members = table.sample_members.tolist()
    for j, info in enumerate(shards):
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        m_lo, m_hi = sample_members[lo], sample_members[hi]
        names, exts = [], []
        for i in range(lo, hi):
            key = table.key(i)
            for m in range(sample_members[i], sample_members[i + 1]):
                ext = table.extensions[int(table.member_ext[m])]
                exts.append(ext)
                names.append(member_name(key, ext))
        text = dali_index_text(
            names,
            exts,
            member_offset[m_lo:m_hi].tolist(),
            table.member_size[m_lo:m_hi].tolist(),
            [m - m_lo for m in sample_members[lo : hi + 1]],
        )
        atomic_write_bytes(dali_index_path(dst / info.name), text.encode("utf-8"), fsync=False)


def build(src: os.PathLike | str, dst: os.PathLike | str, options: Optional[BuildOptions] = None) -> BuildReport:
    """Pack the files under ``src`` into shards and an index in ``dst``."""
    options = options or BuildOptions()
    start = time.perf_counter()
    plan_build(src, dst, options)
    write_planned(dst, workers=options.workers, quiet=options.quiet)
    manifest = finalize_build(dst)
    return report_for(Path(dst), manifest, seconds=time.perf_counter() - start)


def report_for(dst: Path, manifest: Dict[str, Any], *, seconds: float, note: str = "") -> BuildReport:
    return BuildReport(
        dst=dst, manifest=manifest, seconds=seconds, source_bytes=manifest["payload_bytes"],
        warnings=list(manifest["warnings"]), note=note,
    )
