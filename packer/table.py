"""SampleTable: every sample's key and members, held as flat numpy arrays.

A tree of a hundred million files cannot be held as Python objects per file,
and DataLoader workers must be able to share per-sample data without copying
it, so samples live in columns: a key blob with offsets, and members in CSR
form (the members of sample ``i`` are rows ``sample_members[i]`` to
``sample_members[i + 1]`` of the member columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .names import member_name, source_path
from .tarfmt import BLOCK, MAX_OCTAL_SIZE, member_header_size

_GATHER_CHUNK = 1 << 20
MEMBER_FILE, MEMBER_ROW, MEMBER_LABEL = 0, 1, 2


def ext_dtype(num_extensions: int) -> np.dtype:
    """Narrowest unsigned type for extension ids (uint16 unless there are more)."""
    return np.dtype(np.uint16) if num_extensions <= 0xFFFF else np.dtype(np.uint32)


def gather_segments(data: np.ndarray, offsets: np.ndarray, order: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Reorder variable-length segments ``data[offsets[i]:offsets[i+1]]``.

    Returns the new data and offsets.  Works in chunks so memory stays
    proportional to the output, not to eight bytes per element.
    """
    order = np.asarray(order, dtype=np.int64)
    starts = offsets[:-1].astype(np.int64)[order]
    lengths = offsets[1:].astype(np.int64)[order] - starts
    new_offsets = np.zeros(len(order) + 1, dtype=np.uint64)
    np.cumsum(lengths, out=new_offsets[1:])
    out = np.empty(int(new_offsets[-1]), dtype=data.dtype)
    for lo in range(0, len(order), _GATHER_CHUNK):
        hi = min(lo + _GATHER_CHUNK, len(order))
        seg_len = lengths[lo:hi]
        total = int(seg_len.sum())
        if total == 0:
            continue
        out_start = int(new_offsets[lo])
        seg_out_starts = new_offsets[lo:hi].astype(np.int64) - out_start
        idx = np.repeat(starts[lo:hi] - seg_out_starts, seg_len) + np.arange(total, dtype=np.int64)
        out[out_start : out_start + total] = data[idx]
    return out, new_offsets


@dataclass
class SampleTable:
    """Samples in a fixed order; see the module docstring for the layout.

    ``member_header_size`` is the tar header bytes (PAX included) each member
    needs, so sizes and offsets of shards are pure arithmetic.
    ``member_mtime_ns`` is the source file's modification time (zero when the
    table did not come from a scan).
    """

    keys: np.ndarray  # uint8 blob of UTF-8 keys
    key_offsets: np.ndarray  # uint64[N + 1]
    sample_members: np.ndarray  # uint64[N + 1]
    member_ext: np.ndarray  # uint16/uint32[M], index into extensions
    member_size: np.ndarray  # uint64[M]
    member_header_size: np.ndarray  # uint32[M]
    member_mtime_ns: np.ndarray  # int64[M]
    extensions: List[str] = field(default_factory=list)
    # Where each member's bytes come from (MEMBER_FILE, MEMBER_ROW, MEMBER_LABEL);
    # None means every member is a plain file.
    member_kind: Optional[np.ndarray] = None

    @property
    def num_samples(self) -> int:
        return len(self.key_offsets) - 1

    @property
    def num_members(self) -> int:
        return len(self.member_size)

    def key(self, i: int) -> str:
        lo, hi = int(self.key_offsets[i]), int(self.key_offsets[i + 1])
        return bytes(self.keys[lo:hi]).decode("utf-8")

    def members(self, i: int) -> range:
        return range(int(self.sample_members[i]), int(self.sample_members[i + 1]))

    def member_name(self, i: int, m: int) -> str:
        return member_name(self.key(i), self.extensions[int(self.member_ext[m])])

    def source_path(self, i: int, m: int) -> str:
        return source_path(self.key(i), self.extensions[int(self.member_ext[m])])

    def member_spans(self) -> np.ndarray:
        """Archive bytes of each member: headers, data, padding."""
        size = self.member_size.astype(np.uint64)
        return self.member_header_size.astype(np.uint64) + (size + (BLOCK - 1)) // BLOCK * BLOCK

    def sample_bytes(self) -> np.ndarray:
        """Archive bytes of each sample (sum of its members' spans)."""
        spans = self.member_spans()
        per_sample = np.zeros(self.num_samples, dtype=np.uint64)
        counts = np.diff(self.sample_members.astype(np.int64))
        nonempty = counts > 0
        if spans.size:
            sums = np.add.reduceat(spans, self.sample_members[:-1][nonempty].astype(np.int64))
            per_sample[nonempty] = sums
        return per_sample

    def take(self, order: np.ndarray) -> "SampleTable":
        """A new table holding the samples ``order`` in that order."""
        keys, key_offsets = gather_segments(self.keys, self.key_offsets, order)
        member_idx, sample_members = gather_segments(
            np.arange(self.num_members, dtype=np.int64), self.sample_members, order
        )
        return replace(
            self,
            keys=keys,
            key_offsets=key_offsets,
            sample_members=sample_members,
            member_ext=self.member_ext[member_idx],
            member_size=self.member_size[member_idx],
            member_header_size=self.member_header_size[member_idx],
            member_mtime_ns=self.member_mtime_ns[member_idx],
            member_kind=None if self.member_kind is None else self.member_kind[member_idx],
        )

    def arrays(self) -> Dict[str, np.ndarray]:
        """The columns by name, as saved to disk."""
        return {
            "keys": self.keys,
            "key_offsets": self.key_offsets,
            "sample_members": self.sample_members,
            "member_ext": self.member_ext,
            "member_size": self.member_size,
            "member_header_size": self.member_header_size,
            "member_mtime_ns": self.member_mtime_ns,
            "member_kind": self.kinds(),
        }

    def kinds(self) -> np.ndarray:
        """Member kinds, materialized (all MEMBER_FILE when not recorded)."""
        if self.member_kind is None:
            return np.zeros(self.num_members, dtype=np.uint8)
        return self.member_kind

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], extensions: List[str]) -> "SampleTable":
        columns = {k: arrays[k] for k in cls.__dataclass_fields__ if k not in ("extensions", "member_kind")}
        kind = arrays.get("member_kind")
        return cls(extensions=list(extensions), member_kind=kind if kind is not None and np.asarray(kind).any() else None, **columns)


def empty_table() -> SampleTable:
    return SampleTable(
        keys=np.zeros(0, np.uint8),
        key_offsets=np.zeros(1, np.uint64),
        sample_members=np.zeros(1, np.uint64),
        member_ext=np.zeros(0, np.uint16),
        member_size=np.zeros(0, np.uint64),
        member_header_size=np.zeros(0, np.uint32),
        member_mtime_ns=np.zeros(0, np.int64),
    )


def header_sizes(table: SampleTable) -> np.ndarray:
    """Tar header bytes of every member, computed for all members at once.

    Almost every member needs one 512-byte ustar block; only names over 100
    bytes or not plain ASCII, and sizes of 8 GiB or more, need a PAX header,
    and those few are sized one by one by :func:`tarfmt.member_header_size`.
    """
    n, m = table.num_samples, table.num_members
    out = np.full(m, BLOCK, dtype=np.uint32)
    if m == 0:
        return out
    key_offsets = np.asarray(table.key_offsets, dtype=np.int64)
    key_len = np.diff(key_offsets)
    counts = np.diff(np.asarray(table.sample_members, dtype=np.int64))
    member_sample = np.repeat(np.arange(n), counts)
    keys = np.asarray(table.keys, dtype=np.uint8)
    high = np.zeros(n, dtype=bool)
    if keys.size:
        nonempty = key_len > 0
        high[nonempty] = np.maximum.reduceat(keys, key_offsets[:-1][nonempty]) >= 128
    ext_bytes = [e.encode("utf-8") for e in table.extensions]
    ext_len = np.array([len(e) for e in ext_bytes] or [0], dtype=np.int64)
    ext_high = np.array([not e.isascii() for e in ext_bytes] or [False])
    ext = np.asarray(table.member_ext, dtype=np.int64)
    name_len = key_len[member_sample] + 1 + ext_len[ext]
    sizes = np.asarray(table.member_size, dtype=np.uint64)
    # The vectorized form of tarfmt.is_plain, negated.
    special = (name_len > 100) | high[member_sample] | ext_high[ext] | (sizes > np.uint64(MAX_OCTAL_SIZE))
    for i in np.flatnonzero(special).tolist():
        s = int(member_sample[i])
        name = bytes(keys[key_offsets[s] : key_offsets[s + 1]]) + b"." + ext_bytes[ext[i]]
        out[i] = member_header_size(name, int(sizes[i]))
    return out


def concat_sample_columns(parts: Sequence[Any]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, List[str]]:
    """Keys, key offsets, CSR sample members and extension ids of ``parts``
    (anything with ``keys``, ``key_offsets``, ``sample_members``,
    ``member_ext`` and ``extensions``) joined in turn, extension ids
    remapped onto the sorted union of all extensions."""
    extensions = sorted({e for p in parts for e in p.extensions})
    position = {e: i for i, e in enumerate(extensions)}
    key_offsets, sample_members, member_ext = [np.zeros(1, np.uint64)], [np.zeros(1, np.uint64)], []
    key_base = member_base = 0
    for p in parts:
        key_offsets.append(np.asarray(p.key_offsets[1:], dtype=np.uint64) + np.uint64(key_base))
        sample_members.append(np.asarray(p.sample_members[1:], dtype=np.uint64) + np.uint64(member_base))
        remap = np.array([position[e] for e in p.extensions] or [0], dtype=np.int64)
        member_ext.append(remap[np.asarray(p.member_ext, dtype=np.int64)])
        key_base += len(p.keys)
        member_base += len(p.member_ext)
    keys = np.concatenate([np.asarray(p.keys, dtype=np.uint8) for p in parts]) if parts else np.zeros(0, np.uint8)
    ext = np.concatenate(member_ext) if member_ext else np.zeros(0, np.int64)
    return keys, np.concatenate(key_offsets), np.concatenate(sample_members), ext.astype(ext_dtype(len(extensions))), extensions


def concat_tables(tables: List[SampleTable]) -> SampleTable:
    """One table holding the samples of ``tables`` in turn."""
    if not tables:
        return empty_table()
    keys, key_offsets, sample_members, member_ext, extensions = concat_sample_columns(tables)
    return SampleTable(
        keys=keys,
        key_offsets=key_offsets,
        sample_members=sample_members,
        member_ext=member_ext,
        member_size=np.concatenate([t.member_size for t in tables]).astype(np.uint64),
        member_header_size=np.concatenate([t.member_header_size for t in tables]).astype(np.uint32),
        member_mtime_ns=np.concatenate([t.member_mtime_ns for t in tables]).astype(np.int64),
        extensions=extensions,
        member_kind=np.concatenate([t.kinds() for t in tables]) if any(t.member_kind is not None for t in tables) else None,
    )


def drop_unused_extensions(table: SampleTable) -> SampleTable:
    """The same table without extensions no member uses (after drops)."""
    used = np.unique(np.asarray(table.member_ext, dtype=np.int64))
    if len(used) == len(table.extensions):
        return table
    remap = np.zeros(len(table.extensions), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return replace(
        table,
        member_ext=remap[np.asarray(table.member_ext, dtype=np.int64)].astype(ext_dtype(len(used))),
        extensions=[table.extensions[i] for i in used.tolist()],
    )


def keep_samples(table: SampleTable, keep: np.ndarray) -> SampleTable:
    """Table without the samples whose ``keep`` flag is False (order kept)."""
    return table.take(np.flatnonzero(keep))


__all__ = ["SampleTable", "concat_tables", "drop_unused_extensions", "empty_table", "gather_segments", "keep_samples", "ext_dtype"]
