"""Row containers: ``.pt``, ``.npy`` and ``.npz`` files holding many samples.

With ``--rows``, row ``i`` of ``a/b.pt`` becomes one sample whose key is
``escape_key("a/b.pt") + "/" + "%06d" % i`` (at least six digits, more
when the file has a million rows or more): stable, sortable, and unable to
collide with a real path, whose escaped form never contains ``b%2Ept``.
Each field becomes a member stored in NumPy ``.npy`` format (no pickle):

* a single tensor or array: ``<key>.npy``;
* a tuple or list: one member per position, ``<key>.<position>.npy``;
* a dict or ``.npz``: one member per name, ``<key>.<name>.npy``;
* a field whose rows are 0-d integers (class labels) is written as ASCII
  ``.cls`` instead of ``.npy`` (``<key>.cls``, ``<key>.1.cls``, ...).

dtype and shape are kept exactly, except ``bfloat16``, which NumPy lacks:
it is stored as ``float32`` (every bfloat16 value is exactly representable)
and the manifest records the original dtype.  Other dtypes NumPy lacks are
refused with a clear error.

Memory: rows of ``.npy`` files and uncompressed ``.npz`` members are read
with positioned reads, one row at a time (nothing stays resident);
``.pt`` files are loaded with ``torch.load(weights_only=True, mmap=True)``,
or, for files in PyTorch's legacy (non-zip) format that cannot be mapped,
loaded whole once per process, with a warning.  torch is imported only here
and only when a ``.pt`` file is met.
"""

from __future__ import annotations

import errno
import os
import zipfile
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from .errors import PackerError

ROW_EXTENSIONS = ("pt", "pth", "npy", "npz")


@dataclass(frozen=True)
class Field:
    """One member per row: its extension, how it is encoded, and its rows."""

    ext: str  # member extension: "npy", "0.npy", "label.cls", ...
    data: Any  # array-like of rows (numpy array, memmap, or torch tensor)
    as_label: bool  # rows are 0-d integers written as ASCII .cls
    stored_dtype: str  # NumPy dtype written ("" for labels)
    source_dtype: str  # dtype in the file (differs only for bfloat16)
    header: bytes  # .npy header of one row ("" for labels)


def _npy_header(dtype: np.dtype, shape: Tuple[int, ...]) -> bytes:
    from io import BytesIO

    out = BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return out.getvalue()


class PreadRows:
    """Rows of a C-ordered array stored at ``offset`` in ``path``, read with
    ``os.pread`` one row at a time.

    A memory map would serve rows too, but every page it touches stays in
    the process's resident set; packing a 2 GB ``.npy`` through a map grows
    RSS to 2 GB, while positioned reads keep it at one row.
    """

    def __init__(self, file: "_SharedFile", offset: int, dtype: np.dtype, shape: Tuple[int, ...]) -> None:
        self.file, self.path, self.offset, self.dtype, self.shape = file, file.path, offset, dtype, shape
        self.row_shape = shape[1:]
        self.row_bytes = dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, row: int) -> np.ndarray:
        data = os.pread(self.file.fd(), self.row_bytes, self.offset + row * self.row_bytes)
        if len(data) != self.row_bytes:
            raise PackerError(f"{self.path}: ends before row {row}")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.row_shape)

    def all_rows(self) -> np.ndarray:
        """The whole array (used for small label fields)."""
        return np.fromfile(self.path, dtype=self.dtype, count=int(np.prod(self.shape)), offset=self.offset).reshape(self.shape)



class _SharedFile:
    """One descriptor per container file, shared by all of its fields and
    opened on first read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: Optional[int] = None

    def fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def _pread_or_map(array: np.memmap, file: "_SharedFile") -> Any:
    """Positioned reads for C-ordered data; the map itself otherwise."""
    if isinstance(array, np.memmap) and array.flags.c_contiguous and array.ndim >= 1 and not array.dtype.hasobject:
        return PreadRows(file, int(array.offset), array.dtype, tuple(array.shape))
    return array


class RowContainer:
    """A row container opened for reading rows; see the module docstring."""

    def __init__(self, path: str, display: str) -> None:
        self.path = path
        self.display = display
        self.warnings: List[str] = []
        self.fields: List[Field] = []
        self.file = _SharedFile(path)
        named = self._load()
        lengths = {name: len(data) for name, data in named}
        if not named:
            raise PackerError(f"{display}: holds no fields")
        folded: dict = {}
        for name, _ in named:
            if name.lower() in folded:
                raise PackerError(
                    f"{display}: fields {folded[name.lower()]!r} and {name!r} differ only in case, "
                    "and readers lowercase extensions"
                )
            folded[name.lower()] = name
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{name or 'value'}: {n}" for name, n in lengths.items())
            raise PackerError(f"{display}: fields have different numbers of rows ({detail})")
        self.num_rows = next(iter(lengths.values()))
        if self.num_rows == 0:
            raise PackerError(f"{display}: holds 0 rows")
        for name, data in named:
            self.fields.append(self._field(name, data))

    # ------------------------------------------------------------- loading

    def _load(self) -> List[Tuple[str, Any]]:
        """(field name or '', rows) pairs; names are '' for a single value."""
        ext = self.path.rsplit(".", 1)[-1].lower()
        try:
            if ext == "npy":
                return [("", self._checked(_pread_or_map(np.load(self.path, mmap_mode="r", allow_pickle=False), self.file), "", named=False))]
            if ext == "npz":
                return self._load_npz()
            return self._load_torch()
        except PackerError:
            raise
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise  # out of descriptors: the packer's problem, not the file's
            raise PackerError(f"{self.display}: cannot read as a .{ext} file ({type(exc).__name__}: {exc})") from None
        except (ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise PackerError(f"{self.display}: cannot read as a .{ext} file ({type(exc).__name__}: {exc})") from None

    def _load_npz(self) -> List[Tuple[str, Any]]:
        fields = []
        with zipfile.ZipFile(self.path) as archive:
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if info.compress_type == zipfile.ZIP_STORED:
                    data = self._map_npz_member(info)
                else:
                    with archive.open(info) as member:
                        data = np.lib.format.read_array(member, allow_pickle=False)
                    self.warnings.append(f"{self.display}: member {name!r} is compressed, so it is loaded whole")
                fields.append((name, self._checked(data, name)))
        return fields

    def _map_npz_member(self, info: zipfile.ZipInfo) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
            f.seek(start)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if dtype.hasobject:
                raise PackerError(f"{self.display}: member {info.filename!r} holds Python objects, which are not loaded")
            offset = f.tell()
        if not fortran and shape:
            return PreadRows(self.file, offset, dtype, tuple(shape))
        return np.memmap(self.path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)

    def _load_torch(self) -> List[Tuple[str, Any]]:
        import torch

        mappable = zipfile.is_zipfile(self.path)
        try:
            value = torch.load(self.path, map_location="cpu", weights_only=True, mmap=mappable)
        except Exception as exc:  # torch raises many types for foreign content
            text = str(exc).strip()
            first = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
            raise PackerError(
                f"{self.display}: not loadable as tensors with weights_only=True ({type(exc).__name__}: {first})"
            ) from None
        if not mappable:
            self.warnings.append(f"{self.display}: legacy (non-zip) PyTorch format cannot be memory-mapped; loaded whole")
        if isinstance(value, dict):
            return [(str(k), self._checked(v, str(k))) for k, v in value.items()]
        if isinstance(value, (tuple, list)) and value and all(not isinstance(v, (int, float)) for v in value):
            return [(str(i), self._checked(v, str(i))) for i, v in enumerate(value)]
        return [("", self._checked(value, "", named=False))]

    def _checked(self, value: Any, name: str, named: bool = True) -> Any:
        """``value`` if it is rows a field can hold; ``named`` is False only
        for a container's single unnamed value."""
        where = f"{self.display}" + (f": field {name!r}" if name else "")
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float, bool)) for v in value):
            value = np.asarray(value)
        shape = getattr(value, "shape", None)
        if shape is None or not hasattr(value, "dtype"):
            raise PackerError(f"{where}: holds {type(value).__name__}, not a tensor or array of rows")
        if len(shape) == 0:
            raise PackerError(f"{where}: is a 0-d value, not rows (its first dimension must index the samples)")
        if named and ("/" in name or "\n" in name or name.startswith("__") or not name.strip()):
            raise PackerError(f"{self.display}: field name {name!r} cannot be a member extension")
        layout = getattr(value, "layout", None)
        if layout is not None and str(layout) != "torch.strided":
            raise PackerError(f"{where}: is a {layout} tensor; only dense tensors can be stored")
        return value

    def _field(self, name: str, data: Any) -> Field:
        source_dtype, dtype = _dtypes(data, self.display, name)
        row_shape = tuple(int(d) for d in data.shape[1:])
        as_label = row_shape == () and (np.issubdtype(dtype, np.integer) or dtype == np.bool_)
        stem = f"{name}." if name else ""
        if as_label:
            return Field(ext=f"{stem}cls", data=data, as_label=True, stored_dtype="", source_dtype=source_dtype, header=b"")
        header = _npy_header(dtype, row_shape)
        return Field(ext=f"{stem}npy", data=data, as_label=False, stored_dtype=dtype.str, source_dtype=source_dtype, header=header)

    # ------------------------------------------------------------- reading

    def member_sizes(self, field: Field) -> np.ndarray:
        """Byte size of this field's member for every row."""
        if field.as_label:
            return label_lengths(_as_numpy(field.data))
        row_bytes = np.dtype(field.stored_dtype).itemsize * int(np.prod(field.data.shape[1:], dtype=np.int64))
        return np.full(self.num_rows, len(field.header) + row_bytes, dtype=np.uint64)

    def member_bytes(self, field: Field, row: int) -> bytes:
        """The bytes of one member: a .npy file of the row, or an ASCII label."""
        value = field.data[row]
        if field.as_label:
            return str(int(value)).encode("ascii")
        array = _as_numpy(value, field.stored_dtype)
        return field.header + np.ascontiguousarray(array).tobytes()


def label_lengths(labels: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """``len(str(int(v)))`` of every integer label, computed in chunks without
    per-label strings (exact for every int and uint dtype, uint64 included)."""
    out = np.empty(len(labels), dtype=np.uint64)
    powers = [np.uint64(10**k) for k in range(1, 20)]
    for start in range(0, len(labels), chunk):
        part = np.asarray(labels[start : start + chunk])
        if part.dtype == np.bool_ or np.issubdtype(part.dtype, np.unsignedinteger):
            magnitude, negative = part.astype(np.uint64), np.zeros(len(part), dtype=bool)
        else:
            signed = part.astype(np.int64)
            negative = signed < 0
            # -(v + 1) + 1 avoids overflow at the most negative int64
            magnitude = np.where(negative, (-(signed + 1)).astype(np.uint64) + np.uint64(1), signed.astype(np.uint64))
        digits = np.ones(len(part), dtype=np.uint64)
        for power in powers:
            digits += magnitude >= power
        out[start : start + len(part)] = digits + negative
    return out


def _dtypes(data: Any, display: str, name: str) -> Tuple[str, np.dtype]:
    """(dtype name in the file, NumPy dtype written)."""
    if isinstance(data, (np.ndarray, PreadRows)):
        if data.dtype.hasobject:
            raise PackerError(f"{display}: field {name or 'value'!r} holds Python objects")
        return str(data.dtype), data.dtype.newbyteorder("<") if data.dtype.byteorder == ">" else data.dtype
    import torch

    if data.dtype == torch.bfloat16:
        return "bfloat16", np.dtype(np.float32)
    try:
        return str(data.dtype).replace("torch.", ""), np.dtype(torch.empty(0, dtype=data.dtype).numpy().dtype)
    except (TypeError, RuntimeError):
        raise PackerError(
            f"{display}: field {name or 'value'!r} has dtype {data.dtype}, which NumPy cannot store"
        ) from None


def _as_numpy(value: Any, dtype: Optional[str] = None) -> np.ndarray:
    if isinstance(value, PreadRows):
        value = value.all_rows()
    if not isinstance(value, np.ndarray):
        import torch

        if value.dtype == torch.bfloat16:
            value = value.float()
        value = value.detach().resolve_conj().resolve_neg().numpy()
    if dtype and value.dtype.str != dtype:
        value = value.astype(dtype)
    return value


def row_key_width(num_rows: int) -> int:
    return max(6, len(str(max(num_rows - 1, 0))))


def is_row_container(extension: str) -> bool:
    return extension.lower() in ROW_EXTENSIONS


def container_display(root: os.PathLike | str, rel: str) -> str:
    return os.path.join(os.fspath(root), rel)
