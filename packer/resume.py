"""Finish an interrupted build: ``python -m packer build SRC DST --resume``.

Run the interrupted command again with ``--resume``.  The saved plan is the
contract: resuming refuses options that would change the output, and an
SRC that no longer matches the plan (files added, removed, or changed in
size or modification time); it keeps
every shard whose bytes still match the hash recorded when it was finished,
deletes temporary files and unrecorded shards, writes what is missing and
finalizes.  The result is byte-identical to an uninterrupted build.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from time import perf_counter
from typing import Dict, List, Tuple

from .build import BuildOptions, BuildReport, build, finalize_build, report_for, write_planned
from .errors import PackerError, UsageError
from .index import DONE_DIR, MANIFEST_FILE, PLAN_DIR, PLAN_FILE, load_plan, load_shard_records, read_manifest, temp_target
from .names import unescape_key
from .scan import scan_tree
from .table import SampleTable
from .verify import sha256_file

def resume_build(src: os.PathLike | str, dst: os.PathLike | str, options: BuildOptions) -> BuildReport:
    """Complete the build in ``dst``; see the module docstring."""
    src, dst = Path(src), Path(dst)
    if (dst / MANIFEST_FILE).exists() and not (dst / PLAN_DIR).exists():
        manifest = read_manifest(dst)
        if "settings" in manifest:  # recorded by every build since the first release
            _refuse_other_options(dst, options, manifest["settings"], "built with")
        return report_for(dst, manifest, seconds=0.0, note="already complete; nothing to resume")
    if not (dst / PLAN_DIR / PLAN_FILE).exists():
        return _start_over(src, dst, options)
    table, _, meta = load_plan(dst)
    if Path(meta["source"]) != src.resolve():
        raise UsageError(f"{src}: the interrupted build in {dst} was planned for {meta['source']}")
    settings = meta["settings"]
    _refuse_other_options(dst, options, settings, "planned")
    rescanned = scan_tree(
        src,
        key_rule=settings["key_rule"],
        include_hidden=settings["include_hidden"],
        on_error=settings["on_error"],
        workers=options.workers,
        rows=settings.get("rows", False),
        labels_from_dir=settings.get("labels_from_dir", False),
    )
    changes = describe_changes(table, rescanned.table)
    if changes:
        raise PackerError(
            f"{src}: changed since the build was planned ({changes}); --resume cannot give the planned output, "
            f"rebuild with --overwrite"
        )
    _discard_unfinished(dst, meta["shard_names"])
    start = perf_counter()
    write_planned(dst, workers=options.workers, quiet=options.quiet)
    manifest = finalize_build(dst)
    return report_for(dst, manifest, seconds=perf_counter() - start, note="resumed")


def _refuse_other_options(dst: Path, options: BuildOptions, settings: Dict, recorded_as: str) -> None:
    """--resume promises the output of the first command: other options
    (shard size, seed, key rule, ...) would need a new build.  A setting a
    build predates (e.g. ``rows``) counts as its default, which that build
    used."""
    options.check()
    defaults = BuildOptions().settings()
    recorded = {k: settings.get(k, defaults[k]) for k in defaults}
    differing = {k: (v, recorded[k]) for k, v in options.settings().items() if recorded[k] != v}
    if differing:
        detail = ", ".join(f"{k} {new!r} ({recorded_as} {old!r})" for k, (new, old) in differing.items())
        what = "the finished build" if recorded_as == "built with" else "the interrupted build"
        raise UsageError(
            f"{dst}: --resume needs the options of {what}; these differ: {detail} (rebuild with --overwrite)"
        )


def _start_over(src: Path, dst: Path, options: BuildOptions) -> BuildReport:
    """Interrupted before its plan was saved: only temporary files can be
    there, and nothing finished is lost by starting again."""
    if dst.is_dir():
        leftovers = [e for e in os.listdir(dst) if temp_target(e) is None]
        if leftovers:
            raise UsageError(f"{dst}: no saved plan to resume from, and it is not empty ({leftovers[0]})")
        for entry in os.listdir(dst):
            path = dst / entry
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return build(src, dst, options)


def _sample_fingerprints(table: SampleTable) -> Dict[str, Tuple]:
    members = table.sample_members.tolist()
    exts = table.member_ext.tolist()
    sizes = table.member_size.tolist()
    mtimes = table.member_mtime_ns.tolist()
    out = {}
    for i in range(table.num_samples):
        lo, hi = members[i], members[i + 1]
        out[table.key(i)] = tuple((table.extensions[exts[m]], sizes[m], mtimes[m]) for m in range(lo, hi))
    return out


def describe_changes(planned: SampleTable, now: SampleTable) -> str:
    """'' when the two tables hold the same samples, else a short summary."""
    before, after = _sample_fingerprints(planned), _sample_fingerprints(now)
    added = [k for k in after if k not in before]
    removed = [k for k in before if k not in after]
    modified = [k for k in after if k in before and after[k] != before[k]]
    parts: List[str] = []
    for label, keys in (("added", added), ("removed", removed), ("changed", modified)):
        if keys:
            parts.append(f"{len(keys)} sample(s) {label}, e.g. {unescape_key(sorted(keys)[0])}")
    return "; ".join(parts)


def _discard_unfinished(dst: Path, shard_names: List[str]) -> None:
    """Delete temporary files, shards without a record, and recorded shards
    whose bytes no longer match their record (with the record)."""
    for entry in os.listdir(dst):
        if temp_target(entry) is not None:
            path = dst / entry
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    records = load_shard_records(dst)
    for shard, name in enumerate(shard_names):
        path = dst / name
        record = records.get(shard)
        if record is not None and path.exists() and path.stat().st_size == record["num_bytes"] and sha256_file(path) == record["sha256"]:
            continue
        path.unlink(missing_ok=True)
        if record is not None:
            (dst / PLAN_DIR / DONE_DIR / f"{shard:08d}.json").unlink(missing_ok=True)

