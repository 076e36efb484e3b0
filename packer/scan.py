"""SRC tree -> SampleTable: walk, group files into samples, report the rest.

Order: depth-first, directory by directory; in each directory its own
samples come first (sorted by stem), then its subdirectories (sorted by
name).  Names sort by code point, which is UTF-8 byte order.

What happens to each kind of entry (documented in docs/format.md):

* regular file with an extension: a member of the sample named by its stem;
* symbolic link to a regular file: followed (its target's bytes are packed);
* hidden entry (name starts with ``.``): skipped and reported, unless
  ``include_hidden``;
* file without an extension, symbolic link to a directory (never followed,
  so loops cannot happen), FIFO/socket/device: skipped and reported;
* broken or looping symbolic link, name that is not valid UTF-8, two files
  of one sample whose extensions differ only in case (the readers lowercase
  extensions), an extension readers would mistake (``x.__key__``): an
  error, or with ``on_error="skip"`` skipped and reported.

A file that cannot be read is found when it is read (see ``write``), not
here: checking permissions during the scan would cost a system call per
file, and the write step must handle files that change after the scan
anyway.
"""

from __future__ import annotations

import os
import stat as statmod
from operator import attrgetter
from stat import S_ISDIR, S_ISREG
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .errors import PackerError
from .names import escape_key, extension_problem, split_extension
from .sources import RowContainer, is_row_container, row_key_width
from .table import MEMBER_FILE, MEMBER_LABEL, MEMBER_ROW, SampleTable, concat_tables, empty_table, ext_dtype, header_sizes

ON_ERROR_CHOICES = ("stop", "skip")
_entry_name = attrgetter("name")


@dataclass(frozen=True)
class Skipped:
    """A source path left out of the dataset, and why."""

    path: str
    reason: str


@dataclass
class ScanResult:
    table: SampleTable = field(default_factory=empty_table)
    skipped: List[Skipped] = field(default_factory=list)
    symlinks_followed: int = 0
    entries_seen: int = 0
    warnings: List[str] = field(default_factory=list)
    row_dtypes: Dict[str, Dict[str, str]] = field(default_factory=dict)  # container -> {ext: source dtype} where converted
    classes: Optional[List[str]] = None  # with labels_from_dir: class names by label


class _Collector:
    """Accumulates samples into compact arrays while the tree is walked.

    Per-file work here is the scan's hot path, so it only appends; tar
    header sizes are computed for all members at once in :meth:`table`.
    """

    def __init__(self) -> None:
        self.keys = bytearray()
        self.key_offsets = array("Q", [0])
        self.sample_members = array("Q", [0])
        self.member_ext = array("I")
        self.member_size = array("Q")
        self.member_mtime_ns = array("q")
        self.member_kind = array("B")
        self.any_kind = False
        self.ext_ids: Dict[str, int] = {}

    def ext_id(self, ext: str) -> int:
        ext_id = self.ext_ids.get(ext)
        if ext_id is None:
            ext_id = self.ext_ids[ext] = len(self.ext_ids)
        return ext_id

    def add_sample(self, key: str, members: List[Tuple[str, int, int]], label: Optional[int] = None) -> None:
        """A sample of plain files (ext, size, mtime), sorted by extension;
        ``label`` adds a generated ``.cls`` member (``--labels-from-dir``)."""
        self.keys += key.encode("utf-8")
        self.key_offsets.append(len(self.keys))
        if label is not None:
            members = sorted(members + [("cls", len(str(label)), 0, MEMBER_LABEL)])  # type: ignore[list-item]
            self.any_kind = True
        for member in members:
            self.member_ext.append(self.ext_id(member[0]))
            self.member_size.append(member[1])
            self.member_mtime_ns.append(member[2])
            self.member_kind.append(member[3] if len(member) > 3 else MEMBER_FILE)  # type: ignore[misc]
        self.sample_members.append(len(self.member_size))

    def add_rows(self, container_key: str, container: RowContainer, mtime_ns: int, label: Optional[int]) -> None:
        """One sample per row of ``container``, in row order."""
        k = container.num_rows
        width = row_key_width(k)
        columns = [(f.ext, container.member_sizes(f), MEMBER_ROW) for f in container.fields]
        if label is not None:
            columns.append(("cls", np.full(k, len(str(label)), dtype=np.uint64), MEMBER_LABEL))
        columns.sort(key=lambda c: c[0])
        for i in range(k):
            self.keys += f"{container_key}/{i:0{width}d}".encode("utf-8")
            self.key_offsets.append(len(self.keys))
        # Member columns appended as raw bytes: no Python object per row.
        per_row = len(columns)
        sizes = np.stack([c[1] for c in columns], axis=1).astype(np.uint64)
        self.member_size.frombytes(sizes.tobytes())
        ext_ids = np.array([self.ext_id(c[0]) for c in columns], dtype=np.uint32)
        self.member_ext.frombytes(np.tile(ext_ids, k).tobytes())
        self.member_kind.frombytes(np.tile(np.array([c[2] for c in columns], dtype=np.uint8), k).tobytes())
        self.member_mtime_ns.frombytes(np.full(per_row * k, mtime_ns, dtype=np.int64).tobytes())
        base = self.sample_members[-1]
        self.sample_members.frombytes((base + per_row * np.arange(1, k + 1, dtype=np.uint64)).tobytes())
        self.any_kind = True

    def table(self) -> SampleTable:
        # Extension ids are renumbered so the table lists extensions sorted.
        extensions = sorted(self.ext_ids)
        remap = np.zeros(max(len(self.ext_ids), 1), dtype=np.int64)
        for new_id, ext in enumerate(extensions):
            remap[self.ext_ids[ext]] = new_id
        member_ext = remap[np.frombuffer(self.member_ext, dtype=np.uint32).astype(np.int64)] if len(self.member_ext) else np.zeros(0, np.int64)
        table = SampleTable(
            keys=np.frombuffer(bytes(self.keys), dtype=np.uint8),
            key_offsets=np.frombuffer(self.key_offsets, dtype=np.uint64).copy(),
            sample_members=np.frombuffer(self.sample_members, dtype=np.uint64).copy(),
            member_ext=member_ext.astype(ext_dtype(len(extensions))),
            member_size=np.frombuffer(self.member_size, dtype=np.uint64).copy(),
            member_header_size=np.zeros(len(self.member_size), dtype=np.uint32),
            member_mtime_ns=np.frombuffer(self.member_mtime_ns, dtype=np.int64).copy(),
            extensions=extensions,
            member_kind=np.frombuffer(self.member_kind, dtype=np.uint8).copy() if self.any_kind else None,
        )
        table.member_header_size = header_sizes(table)
        return table


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(mode: int) -> str:
    if statmod.S_ISFIFO(mode):
        return "FIFO"
    if statmod.S_ISSOCK(mode):
        return "socket"
    if statmod.S_ISCHR(mode) or statmod.S_ISBLK(mode):
        return "device"
    return "special file"


@dataclass(frozen=True)
class _Rules:
    key_rule: str
    include_hidden: bool
    on_error: str
    rows: bool = False
    classes: Optional[Dict[str, int]] = None  # first-level directory -> label


class _Walker:
    """Scans directories into one collector, in the documented order."""

    def __init__(self, root: Path, rules: _Rules) -> None:
        self.root = root
        self.rules = rules
        self.collector = _Collector()
        self.result = ScanResult()

    def fail(self, rel: str, reason: str) -> None:
        if self.rules.on_error == "skip":
            self.result.skipped.append(Skipped(rel, reason))
        else:
            raise PackerError(f"{self.root / rel}: {reason} (use --on-error skip to leave it out)")

    def walk(self, rel_dir: str, recursive: bool, progress: Optional[Callable[[int], None]] = None) -> None:
        """Scan ``rel_dir`` ('' or ending in '/'), and below it if ``recursive``."""
        stack = [rel_dir]
        while stack:
            seen_before = self.result.entries_seen
            subdirs = self.directory(stack.pop())
            if progress is not None:
                progress(self.result.entries_seen - seen_before)
            if recursive:
                stack.extend(reversed(subdirs))

    def directory(self, rel_dir: str) -> List[str]:
        """Collect one directory's samples; return its subdirectories to visit."""
        rules, skipped = self.rules, self.result.skipped
        abs_dir = os.path.join(self.root, rel_dir) if rel_dir else str(self.root)
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=_entry_name)
        except OSError as exc:
            self.fail(rel_dir or ".", f"cannot list directory: {exc.strerror}")
            return []
        self.result.entries_seen += len(entries)
        last_dot = rules.key_rule == "last-dot"
        include_hidden = rules.include_hidden
        groups: Dict[str, List[Tuple[str, int, int, str]]] = {}
        containers: List[Tuple[str, int]] = []
        subdirs: List[str] = []
        label: Optional[int] = None
        if rules.classes is not None and rel_dir:
            label = rules.classes.get(rel_dir.split("/", 1)[0])
        for entry in entries:
            name = entry.name
            if not name.isascii() and not _is_utf8(name):
                self.fail((rel_dir + name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), "name is not valid UTF-8")
                continue
            if name[0] == "." and not include_hidden:
                skipped.append(Skipped(rel_dir + name, "hidden"))
                continue
            is_link = False
            try:
                is_link = entry.is_symlink()
                st = entry.stat()
            except FileNotFoundError:
                self.fail(rel_dir + name, "broken symbolic link" if is_link else "vanished while scanning")
                continue
            except OSError as exc:
                reason = f"looping symbolic link ({exc.strerror})" if is_link else f"cannot stat: {exc.strerror}"
                self.fail(rel_dir + name, reason)
                continue
            mode = st.st_mode
            if not S_ISREG(mode):
                if S_ISDIR(mode):
                    if is_link:
                        skipped.append(Skipped(rel_dir + name, "symbolic link to a directory (not followed)"))
                    else:
                        subdirs.append(rel_dir + name + "/")
                else:
                    skipped.append(Skipped(rel_dir + name, f"not a regular file ({_kind(mode)})"))
                continue
            # Fast path of split_extension for the common "stem.ext" name.
            dot = name.rfind(".") if last_dot else name.find(".")
            if 0 < dot < len(name) - 1 and name[0] != ".":
                stem, ext = name[:dot], name[dot + 1 :]
            else:
                parts = split_extension(name, rules.key_rule)
                if parts is None:
                    skipped.append(Skipped(rel_dir + name, "no extension"))
                    continue
                stem, ext = parts
            if ext[0] == "_" or "\n" in ext:
                problem = extension_problem(ext)
                if problem:
                    self.fail(rel_dir + name, problem)
                    continue
            if is_link:
                self.result.symlinks_followed += 1
            if rules.classes is not None and label is None:
                self.fail(rel_dir + name, "not inside a class directory (--labels-from-dir)")
                continue
            if rules.rows and is_row_container(name.rsplit(".", 1)[-1]):
                containers.append((name, st.st_mtime_ns))
                continue
            member = (ext, st.st_size, st.st_mtime_ns, name)
            group = groups.get(stem)
            if group is None:
                groups[stem] = [member]
            else:
                group.append(member)
        add_sample = self.collector.add_sample
        for stem in sorted(groups):
            members = groups[stem]
            if len(members) == 1 and label is None:
                ext, size, mtime_ns, _ = members[0]
                add_sample(escape_key(rel_dir + stem), [(ext, size, mtime_ns)])
                continue
            members.sort()
            seen: Dict[str, str] = {"cls": "the label from --labels-from-dir"} if label is not None else {}
            kept: List[Tuple[str, int, int]] = []
            for ext, size, mtime_ns, name in members:
                folded = ext.lower()
                if folded in seen:
                    if folded == ext and label is not None and folded == "cls":
                        self.fail(rel_dir + name, "a .cls file where --labels-from-dir adds the label as .cls")
                    else:
                        self.fail(rel_dir + name, f"extension differs only in case from {seen[folded]} (readers lowercase extensions)")
                    continue
                seen[folded] = rel_dir + name
                kept.append((ext, size, mtime_ns))
            if kept:
                add_sample(escape_key(rel_dir + stem), kept, label)
        for name, mtime_ns in containers:
            try:
                container = RowContainer(os.path.join(abs_dir, name), str(self.root / (rel_dir + name)))
            except PackerError as exc:
                if rules.on_error != "skip":
                    raise
                self.result.skipped.append(Skipped(rel_dir + name, str(exc).split(": ", 1)[-1]))
                continue
            if label is not None and any(f.ext.lower() == "cls" for f in container.fields):
                self.fail(rel_dir + name, "its rows already have a .cls field, which would clash with the label from --labels-from-dir")
                continue
            self.result.warnings.extend(container.warnings)
            converted = {f.ext: f.source_dtype for f in container.fields if f.source_dtype == "bfloat16"}
            if converted:
                self.result.row_dtypes[rel_dir + name] = converted
            self.collector.add_rows(escape_key(rel_dir + name), container, mtime_ns, label)
        return subdirs

    def finish(self) -> ScanResult:
        self.result.table = self.collector.table()
        return self.result


def _work_units(root: Path, include_hidden: bool, wanted: int) -> List[Tuple[str, bool]]:
    """Split the tree into independent pieces for parallel scanning.

    Breadth-first from the root: a listed directory becomes a files-only
    unit and its subdirectories become candidates, until there are enough
    units; the remaining candidates are scanned whole.  Units are returned
    in scan order: sorting by path components puts a directory's own files
    before its subdirectories, depth-first, as the serial walk does.
    """
    queue = [""]
    units: List[Tuple[str, bool]] = []
    while queue and len(units) + len(queue) < wanted:
        rel_dir = queue.pop(0)
        units.append((rel_dir, False))
        try:
            with os.scandir(os.path.join(root, rel_dir)) as it:
                names = sorted(
                    e.name
                    for e in it
                    if e.is_dir(follow_symlinks=False)
                    and (include_hidden or not e.name.startswith("."))
                    and (e.name.isascii() or _is_utf8(e.name))
                )
        except OSError:
            continue  # the unit's own walk reports it
        queue.extend(rel_dir + name + "/" for name in names)
    units.extend((rel_dir, True) for rel_dir in queue)
    return sorted(units, key=lambda unit: unit[0].split("/"))


def _scan_unit(root: str, rules: _Rules, rel_dir: str, recursive: bool) -> ScanResult:
    walker = _Walker(Path(root), rules)
    walker.walk(rel_dir, recursive)
    return walker.finish()


def scan_tree(
    src: os.PathLike | str,
    *,
    key_rule: str = "last-dot",
    include_hidden: bool = False,
    on_error: str = "stop",
    progress: Optional[Callable[[int], None]] = None,
    workers: int = 1,
    rows: bool = False,
    labels_from_dir: bool = False,
) -> ScanResult:
    """Walk ``src`` and group its files into samples.

    ``rows`` makes ``.pt``/``.npy``/``.npz`` files containers whose rows are
    samples (see :mod:`packer.sources`).  ``labels_from_dir`` gives every
    sample a ``.cls`` member: the index of its first-level directory among
    all first-level directories in sorted order, as torchvision's
    ImageFolder numbers classes (listed in ``ScanResult.classes``).

    With ``workers > 1`` subtrees are scanned in parallel processes and
    merged; the result is identical to a serial scan.  ``progress(n)`` is
    called with the number of directory entries seen since the last call.
    Raises :class:`PackerError` naming the path of the first bad entry (in
    scan order) unless ``on_error == "skip"``.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    root = Path(src)
    classes = class_directories(root, include_hidden) if labels_from_dir else None
    rules = _Rules(key_rule, include_hidden, on_error, rows, {c: i for i, c in enumerate(classes)} if classes is not None else None)
    units = _work_units(root, include_hidden, 8 * workers) if workers > 1 else []
    if len(units) < 2:
        walker = _Walker(root, rules)
        walker.walk("", True, progress)
        result = walker.finish()
        result.classes = classes
        return result
    from .pool import results_in_order, worker_pool

    parts: List[ScanResult] = []
    with worker_pool(min(workers, len(units))) as (pool, check_interrupt):
        futures = [pool.submit(_scan_unit, str(root), rules, rel_dir, recursive) for rel_dir, recursive in units]
        # In scan order, so the first error raised is the serial one.
        for part in results_in_order(futures, check_interrupt):
            if progress is not None:
                progress(part.entries_seen)
            parts.append(part)
    return ScanResult(
        table=concat_tables([p.table for p in parts]),
        skipped=[s for p in parts for s in p.skipped],
        symlinks_followed=sum(p.symlinks_followed for p in parts),
        entries_seen=sum(p.entries_seen for p in parts),
        warnings=[w for p in parts for w in p.warnings],
        row_dtypes={k: v for p in parts for k, v in p.row_dtypes.items()},
        classes=classes,
    )


def class_directories(root: Path, include_hidden: bool) -> List[str]:
    """First-level directories of ``root``, sorted: the class names."""
    try:
        with os.scandir(root) as it:
            return sorted(
                e.name for e in it
                if e.is_dir(follow_symlinks=False) and (include_hidden or not e.name.startswith(".")) and _is_utf8(e.name)
            )
    except OSError as exc:
        raise PackerError(f"{root}: cannot list directory: {exc.strerror}") from None
