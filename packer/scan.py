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
* unreadable file, broken or looping symbolic link, name that is not valid
  UTF-8, two files of one sample whose extensions differ only in case (the
  readers lowercase extensions): an error, or with ``on_error="skip"``
  skipped and reported.
"""

from __future__ import annotations

import os
import stat as statmod
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .errors import PackerError
from .names import escape_key, split_extension
from .table import SampleTable, ext_dtype
from .tarfmt import member_header_size

ON_ERROR_CHOICES = ("stop", "skip")


@dataclass(frozen=True)
class Skipped:
    """A source path left out of the dataset, and why."""

    path: str
    reason: str


@dataclass
class ScanResult:
    table: SampleTable
    skipped: List[Skipped] = field(default_factory=list)
    symlinks_followed: int = 0


class _Collector:
    """Accumulates samples into compact arrays while the tree is walked."""

    def __init__(self) -> None:
        self.keys = bytearray()
        self.key_offsets = array("Q", [0])
        self.sample_members = array("Q", [0])
        self.member_ext = array("I")
        self.member_size = array("Q")
        self.member_header_size = array("I")
        self.member_mtime_ns = array("q")
        self.ext_ids: Dict[str, int] = {}

    def add_sample(self, key: str, members: List[Tuple[str, int, int]]) -> None:
        key_bytes = key.encode("utf-8")
        self.keys += key_bytes
        self.key_offsets.append(len(self.keys))
        for ext, size, mtime_ns in members:
            ext_id = self.ext_ids.setdefault(ext, len(self.ext_ids))
            self.member_ext.append(ext_id)
            self.member_size.append(size)
            name = key_bytes + b"." + ext.encode("utf-8")
            self.member_header_size.append(member_header_size(name, size))
            self.member_mtime_ns.append(mtime_ns)
        self.sample_members.append(len(self.member_size))

    def table(self) -> SampleTable:
        # Extension ids are renumbered so the table lists extensions sorted.
        extensions = sorted(self.ext_ids)
        remap = np.zeros(max(len(self.ext_ids), 1), dtype=np.int64)
        for new_id, ext in enumerate(extensions):
            remap[self.ext_ids[ext]] = new_id
        member_ext = remap[np.frombuffer(self.member_ext, dtype=np.uint32).astype(np.int64)] if len(self.member_ext) else np.zeros(0, np.int64)
        return SampleTable(
            keys=np.frombuffer(bytes(self.keys), dtype=np.uint8),
            key_offsets=np.frombuffer(self.key_offsets, dtype=np.uint64).copy(),
            sample_members=np.frombuffer(self.sample_members, dtype=np.uint64).copy(),
            member_ext=member_ext.astype(ext_dtype(len(extensions))),
            member_size=np.frombuffer(self.member_size, dtype=np.uint64).copy(),
            member_header_size=np.frombuffer(self.member_header_size, dtype=np.uint32).copy(),
            member_mtime_ns=np.frombuffer(self.member_mtime_ns, dtype=np.int64).copy(),
            extensions=extensions,
        )


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


def scan_tree(
    src: os.PathLike | str,
    *,
    key_rule: str = "last-dot",
    include_hidden: bool = False,
    on_error: str = "stop",
    progress: Optional[Callable[[int], None]] = None,
) -> ScanResult:
    """Walk ``src`` and group its files into samples.

    ``progress(n)`` is called with the number of entries seen in each
    directory, for a progress bar.  Raises :class:`PackerError` naming the
    path on the first bad entry unless ``on_error == "skip"``.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    root = Path(src)
    collector = _Collector()
    result = ScanResult(table=None)  # type: ignore[arg-type]

    def fail(rel: str, reason: str) -> None:
        if on_error == "skip":
            result.skipped.append(Skipped(rel, reason))
        else:
            raise PackerError(f"{root / rel}: {reason} (use --on-error skip to leave it out)")

    stack: List[str] = [""]  # relative directory paths, "" for the root
    while stack:
        rel_dir = stack.pop()
        abs_dir = os.path.join(root, rel_dir) if rel_dir else str(root)
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            fail(rel_dir or ".", f"cannot list directory: {exc.strerror}")
            continue
        if progress is not None:
            progress(len(entries))
        groups: Dict[str, List[Tuple[str, int, int, str]]] = {}
        subdirs: List[str] = []
        for entry in entries:
            name = entry.name
            rel = rel_dir + name
            if not _is_utf8(name):
                fail(rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), "name is not valid UTF-8")
                continue
            if name.startswith(".") and not include_hidden:
                result.skipped.append(Skipped(rel, "hidden"))
                continue
            is_link = False
            try:
                is_link = entry.is_symlink()
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                if is_link:
                    fail(rel, "broken symbolic link")
                else:
                    fail(rel, "vanished while scanning")
                continue
            except OSError as exc:
                fail(rel, f"looping symbolic link ({exc.strerror})" if is_link else f"cannot stat: {exc.strerror}")
                continue
            if statmod.S_ISDIR(st.st_mode):
                if is_link:
                    result.skipped.append(Skipped(rel, "symbolic link to a directory (not followed)"))
                else:
                    subdirs.append(rel + "/")
                continue
            if not statmod.S_ISREG(st.st_mode):
                result.skipped.append(Skipped(rel, f"not a regular file ({_kind(st.st_mode)})"))
                continue
            parts = split_extension(name, key_rule)
            if parts is None:
                result.skipped.append(Skipped(rel, "no extension"))
                continue
            if not os.access(entry.path, os.R_OK):
                fail(rel, "permission denied")
                continue
            if is_link:
                result.symlinks_followed += 1
            stem, ext = parts
            groups.setdefault(stem, []).append((ext, st.st_size, st.st_mtime_ns, rel))
        for stem in sorted(groups):
            members = sorted(groups[stem])
            seen: Dict[str, str] = {}
            kept: List[Tuple[str, int, int]] = []
            for ext, size, mtime_ns, rel in members:
                folded = ext.lower()
                if folded in seen:
                    fail(rel, f"extension differs only in case from {seen[folded]} (readers lowercase extensions)")
                    continue
                seen[folded] = rel
                kept.append((ext, size, mtime_ns))
            collector.add_sample(escape_key(rel_dir + stem), kept)
        stack.extend(reversed(subdirs))
    result.table = collector.table()
    return result
