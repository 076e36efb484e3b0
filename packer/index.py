"""THE on-disk format: manifest, binary index, build plan, wids and DALI files.

Every file the packer writes besides the shards is defined here, for
writing and for reading; ``docs/format.md`` documents the same layout for
readers in other languages.  Writes go to a temporary name and are renamed
into place, and ``index.json`` is written last, so its presence is what
marks a dataset as complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import PackerError
from .names import member_name, source_path
from .table import SampleTable

FORMAT_NAME = "packer-webdataset"
FORMAT_VERSION = 1
MANIFEST_FILE = "index.json"
INDEX_DIR = "index"
WIDS_FILE = "wids.json"
PLAN_DIR = ".plan"
PLAN_FILE = "plan.json"
DONE_DIR = "done"
TEMP_SUFFIX = ".tmp"

# name -> (dtype, length) of each binary index array; N samples, M members.
INDEX_ARRAYS: Dict[str, Tuple[str, str]] = {
    "keys": ("uint8", "bytes of all keys, UTF-8, concatenated"),
    "key_offsets": ("uint64", "N + 1"),
    "sample_shard": ("uint32", "N"),
    "sample_offset": ("uint64", "N"),
    "sample_members": ("uint64", "N + 1"),
    "member_ext": ("uint16 (uint32 past 65535 extensions)", "M"),
    "member_offset": ("uint64", "M"),
    "member_size": ("uint64", "M"),
}
PLAN_ARRAYS = ("keys", "key_offsets", "sample_members", "member_ext", "member_size", "member_header_size", "member_mtime_ns", "member_kind", "shard_bounds")


class IndexFormatError(PackerError):
    """An index that is missing, incomplete, or not ours; names the file."""


# ------------------------------------------------------------- atomic writes


def temp_path(path: Path) -> Path:
    """Hidden sibling name used while ``path`` is being written."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")


_TEMP_NAME = re.compile(r"^\.(.+)\.\d+" + re.escape(TEMP_SUFFIX) + "$")


def temp_target(name: str) -> Optional[str]:
    """The name a :func:`temp_path` file was being written for, or None."""
    match = _TEMP_NAME.match(name)
    return match.group(1) if match else None


def atomic_write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_directory(directory: Path) -> None:
    """Make renames inside ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any, *, fsync: bool = True) -> None:
    data = (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    atomic_write_bytes(path, data, fsync=fsync)


def save_arrays(directory: Path, arrays: Dict[str, np.ndarray]) -> None:
    """Write arrays as ``<name>.npy`` into ``directory``, which appears whole."""
    tmp = temp_path(directory)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_arrays(directory: Path, names: Iterable[str], *, mmap: bool = True) -> Dict[str, np.ndarray]:
    out = {}
    for name in names:
        path = directory / f"{name}.npy"
        try:
            out[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise IndexFormatError(f"{path}: missing index file") from None
        except Exception as exc:  # numpy parses the header with tokenize/ast: many failure types
            raise IndexFormatError(f"{path}: not a valid .npy file ({type(exc).__name__}: {exc})") from None
    return out


# ------------------------------------------------------------------ the plan


def save_plan(dst: Path, table: SampleTable, bounds: np.ndarray, meta: Dict[str, Any]) -> None:
    """Save the build plan (every sample's shard and source fingerprint)."""
    plan_dir = dst / PLAN_DIR
    arrays = dict(table.arrays(), shard_bounds=np.asarray(bounds, dtype=np.int64))
    save_arrays(plan_dir, arrays)
    atomic_write_json(plan_dir / PLAN_FILE, dict(meta, extensions=table.extensions))


def save_shard_record(dst: Path, record: Dict[str, Any]) -> None:
    """Mark one shard finished: its size, hash, and samples dropped while
    writing it.  The records are what ``finalize`` builds the index from."""
    done = Path(dst) / PLAN_DIR / DONE_DIR
    done.mkdir(exist_ok=True)
    atomic_write_json(done / f"{record['shard']:08d}.json", record, fsync=False)


def load_shard_records(dst: Path) -> Dict[int, Dict[str, Any]]:
    done = Path(dst) / PLAN_DIR / DONE_DIR
    records = {}
    for path in sorted(done.glob("*.json")) if done.is_dir() else []:
        record = json.loads(path.read_text("utf-8"))
        records[int(record["shard"])] = record
    return records


def load_plan(dst: Path) -> Tuple[SampleTable, np.ndarray, Dict[str, Any]]:
    plan_dir = Path(dst) / PLAN_DIR
    try:
        meta = json.loads((plan_dir / PLAN_FILE).read_text("utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{plan_dir / PLAN_FILE}: no saved build plan") from None
    arrays = load_arrays(plan_dir, PLAN_ARRAYS)
    bounds = np.asarray(arrays.pop("shard_bounds"))
    return SampleTable.from_arrays(arrays, meta["extensions"]), bounds, meta


# -------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class ShardInfo:
    name: str
    num_samples: int
    first_sample: int
    num_bytes: int
    sha256: str


def shard_name(prefix: str, shard: int, num_shards: int) -> str:
    width = max(6, len(str(max(num_shards - 1, 0))))
    return f"{prefix}-{shard:0{width}d}.tar"


def write_index(
    dst: Path,
    table: SampleTable,
    index_arrays: Dict[str, np.ndarray],
    shards: Sequence[ShardInfo],
    *,
    settings: Dict[str, Any],
    skipped: Sequence[Dict[str, str]],
    warnings: Sequence[str],
    created_by: str,
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Write the binary index, ``wids.json`` and, last, ``index.json``."""
    index_dir = dst / INDEX_DIR
    if index_dir.exists():
        shutil.rmtree(index_dir)
    save_arrays(index_dir, index_arrays)
    counts = np.bincount(np.asarray(table.member_ext, dtype=np.int64), minlength=len(table.extensions))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": created_by,
        "num_samples": table.num_samples,
        "num_members": table.num_members,
        "num_bytes": int(sum(s.num_bytes for s in shards)),
        "payload_bytes": int(np.asarray(table.member_size, dtype=np.uint64).sum()),
        "num_shards": len(shards),
        "shards": [asdict(s) for s in shards],
        "extensions": [{"ext": e, "count": int(c)} for e, c in zip(table.extensions, counts)],
        "index": {"directory": INDEX_DIR, "arrays": {k: str(v.dtype) for k, v in index_arrays.items()}},
        "settings": settings,
        "skipped": list(skipped),
        "warnings": list(warnings),
        **(extra or {}),
    }
    wids = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": settings.get("prefix", "shard"),
        "shardlist": [{"url": s.name, "nsamples": s.num_samples, "filesize": s.num_bytes} for s in shards],
    }
    atomic_write_json(dst / WIDS_FILE, wids)
    atomic_write_json(dst / MANIFEST_FILE, manifest)
    return manifest


def dali_index_text(names: Sequence[str], exts: Sequence[str], offsets: Sequence[int], sizes: Sequence[int], sample_members: Sequence[int]) -> str:
    """One shard's NVIDIA DALI webdataset index, format ``v1.2``.

    First line ``v1.2 <samples>``, then one line per sample listing, for each
    member, ``<ext> <data offset> <size> <member name>`` separated by spaces.
    """
    lines = [f"v1.2 {len(sample_members) - 1}"]
    for i in range(len(sample_members) - 1):
        parts = []
        for m in range(sample_members[i], sample_members[i + 1]):
            parts.append(f"{exts[m]} {offsets[m]} {sizes[m]} {names[m]}")
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def dali_index_path(shard_path: Path) -> Path:
    return shard_path.with_suffix(".idx")


# ---------------------------------------------------------------- reading


class PackedIndex:
    """A finished dataset's manifest and binary index, opened for reading.

    Arrays are memory-mapped, so opening is fast whatever the dataset's size
    and every DataLoader worker shares the same pages.
    """

    def __init__(self, root: os.PathLike | str, *, mmap: bool = True) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.extensions: List[str] = [e["ext"] for e in self.manifest["extensions"]]
        self.shards: List[Dict[str, Any]] = self.manifest["shards"]
        arrays = load_arrays(self.root / self.manifest["index"]["directory"], INDEX_ARRAYS, mmap=mmap)
        self.keys = arrays["keys"]
        self.key_offsets = arrays["key_offsets"]
        self.sample_shard = arrays["sample_shard"]
        self.sample_offset = arrays["sample_offset"]
        self.sample_members = arrays["sample_members"]
        self.member_ext = arrays["member_ext"]
        self.member_offset = arrays["member_offset"]
        self.member_size = arrays["member_size"]
        self._check_shapes()

    def _check_shapes(self) -> None:
        n, m = self.num_samples, len(self.member_size)
        expected = {
            "key_offsets": (self.key_offsets, n + 1),
            "sample_shard": (self.sample_shard, n),
            "sample_offset": (self.sample_offset, n),
            "sample_members": (self.sample_members, n + 1),
            "member_ext": (self.member_ext, m),
            "member_offset": (self.member_offset, m),
        }
        for name, (array, length) in expected.items():
            if array.ndim != 1 or len(array) != length:
                raise IndexFormatError(f"{self.root / INDEX_DIR / name}.npy: expected {length} entries, found {array.shape}")
        dtypes = {
            "keys": ("uint8",), "key_offsets": ("uint64",), "sample_shard": ("uint32",), "sample_offset": ("uint64",),
            "sample_members": ("uint64",), "member_ext": ("uint16", "uint32"), "member_offset": ("uint64",), "member_size": ("uint64",),
        }
        for name, allowed in dtypes.items():
            array = getattr(self, name)
            if str(array.dtype) not in allowed or array.dtype.byteorder == ">":
                raise IndexFormatError(f"{self.root / INDEX_DIR / name}.npy: dtype {array.dtype}, expected {' or '.join(allowed)}")
        if m != self.manifest.get("num_members", m) or int(self.sample_members[-1]) != m:
            raise IndexFormatError(f"{self.root / INDEX_DIR}: member arrays do not match sample_members")

    @property
    def num_samples(self) -> int:
        return int(self.manifest["num_samples"])

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def shard_path(self, shard: int) -> Path:
        return self.root / self.shards[shard]["name"]

    def key(self, i: int) -> str:
        return bytes(self.keys[int(self.key_offsets[i]) : int(self.key_offsets[i + 1])]).decode("utf-8")

    def members(self, i: int) -> List[Tuple[str, int, int]]:
        """(extension, data offset, size) of each member of sample ``i``."""
        lo, hi = int(self.sample_members[i]), int(self.sample_members[i + 1])
        return [
            (self.extensions[int(self.member_ext[m])], int(self.member_offset[m]), int(self.member_size[m]))
            for m in range(lo, hi)
        ]

    def member_names(self, i: int) -> List[str]:
        key = self.key(i)
        return [member_name(key, ext) for ext, _, _ in self.members(i)]

    def source_paths(self, i: int) -> List[str]:
        """Original paths (relative to the build's SRC) of sample ``i``'s files."""
        key = self.key(i)
        return [source_path(key, ext) for ext, _, _ in self.members(i)]

    def shard_samples(self, shard: int) -> range:
        info = self.shards[shard]
        return range(info["first_sample"], info["first_sample"] + info["num_samples"])


def read_manifest(root: os.PathLike | str) -> Dict[str, Any]:
    """Load and check ``index.json``; a clear error when the build is unfinished."""
    root = Path(root)
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise IndexFormatError(f"{root}: no such dataset directory")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        why = "the build did not finish" if (root / PLAN_DIR).exists() else "not a dataset made by packer build"
        raise IndexFormatError(f"{root}: no {MANIFEST_FILE} ({why})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path}: not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: format version {version!r}; this packer reads version {FORMAT_VERSION}")
    return manifest


def is_dataset(root: os.PathLike | str) -> bool:
    return (Path(root) / MANIFEST_FILE).is_file()


__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_FILE", "INDEX_DIR", "WIDS_FILE", "PLAN_DIR",
    "INDEX_ARRAYS", "IndexFormatError", "PackedIndex", "ShardInfo", "read_manifest", "is_dataset",
    "save_plan", "load_plan", "save_shard_record", "load_shard_records", "write_index", "shard_name", "dali_index_text", "dali_index_path",
    "atomic_write_bytes", "atomic_write_json", "fsync_directory", "temp_target", "save_arrays", "load_arrays", "temp_path",
]
