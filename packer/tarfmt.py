"""Tar bytes: header blocks we write, and a small header reader.

Pure functions over bytes.  Writing is ustar with fixed metadata (mode 0644,
uid/gid 0, empty owner names, mtime 0) so the same input gives the same
bytes; a PAX extended header is added only for a member whose name is not
plain ASCII or is longer than the 100-byte ustar name field, or whose size
does not fit the 11 octal digits of the size field.  Archives end with the
two zero blocks the standard asks for and are not padded to a 10 KiB record,
so a shard's size is exactly the sum of its members' spans plus 1024.

Reading understands ustar (with the 155-byte prefix), PAX (``x`` and ``g``
headers), GNU long names (``L``/``K``) and base-256 numbers, which covers tars
written by GNU tar, Python's tarfile and webdataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional, Sequence

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
MAX_OCTAL_SIZE = 8**11 - 1
_PAX_NAME = b"././@PaxHeader"

# Fixed fields of every header we write.
_MODE_UID_GID = b"0000644\x00" + b"0000000\x00" + b"0000000\x00"
_MTIME = b"00000000000\x00"
_TAIL = (
    bytes(100)  # linkname
    + b"ustar\x0000"  # magic + version
    + bytes(32)  # uname
    + bytes(32)  # gname
    + b"0000000\x00" * 2  # devmajor, devminor
    + bytes(155)  # prefix
    + bytes(12)  # padding to 512
)
_FIXED_SUM = sum(_MODE_UID_GID) + sum(_MTIME) + sum(_TAIL) + 8 * ord(" ")
_FIXED_SUM_REGULAR = _FIXED_SUM + ord("0")
_REGULAR_TAIL = b"0" + _TAIL


class TarFormatError(ValueError):
    """A tar header that cannot be parsed; the message names the offset."""


def padded(size: int) -> int:
    """Bytes a member's data occupies, rounded up to whole blocks."""
    return (size + BLOCK - 1) // BLOCK * BLOCK


def _pax_records(name: bytes, size: int) -> bytes:
    """PAX records for a member; each record's length counts its own digits."""
    out = []
    fields = [(b"path", name)] if (len(name) > 100 or not name.isascii()) else []
    if size > MAX_OCTAL_SIZE:
        fields.append((b"size", str(size).encode()))
    for keyword, value in fields:
        body = b" " + keyword + b"=" + value + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out.append(str(length).encode() + body)
    return b"".join(out)


def _ustar_header(name: bytes, size: int, typeflag: bytes = b"0") -> bytes:
    size_field = (b"%011o\x00" % size) if size <= MAX_OCTAL_SIZE else b"00000000000\x00"
    name_field = name.ljust(100, b"\x00")
    checksum = _FIXED_SUM + sum(name_field) + sum(size_field) + typeflag[0]
    return (
        name_field
        + _MODE_UID_GID
        + size_field
        + _MTIME
        + b"%06o\x00 " % checksum
        + typeflag
        + _TAIL
    )


_PLAIN_TEMPLATE = bytearray(_ustar_header(b"", 0))
_PLAIN_TEMPLATE[148:156] = b" " * 8


def member_header(name: bytes, size: int) -> bytes:
    """All header bytes written before a regular member's data."""
    if is_plain(name, size):
        size_field = b"%011o\x00" % size
        checksum = _FIXED_SUM_REGULAR + sum(name) + sum(size_field)
        return name + bytes(100 - len(name)) + _MODE_UID_GID + size_field + _MTIME + (b"%06o\x00 " % checksum) + _REGULAR_TAIL
    records = _pax_records(name, size)
    fallback = bytes(b if 32 <= b < 127 else 95 for b in name[:100])
    return (
        _ustar_header(_PAX_NAME, len(records), b"x")
        + records
        + bytes(padded(len(records)) - len(records))
        + _ustar_header(fallback, size)
    )


def is_plain(name: bytes, size: int) -> bool:
    """True when one ustar block holds the member's header (no PAX needed)."""
    return len(name) <= 100 and size <= MAX_OCTAL_SIZE and name.isascii()


def plain_headers(names: Sequence[bytes], sizes: Sequence[int]) -> bytes:
    """``b"".join(member_header(n, s) ...)`` for plain members, computed at once.

    Building headers one call at a time costs about a microsecond each,
    which matters when packing millions of tiny files; here the names are
    scattered into a ``(k, 512)`` array and the octal size and checksum
    fields are filled column by column.
    """
    import numpy as np

    k = len(names)
    if k == 0:
        return b""
    block = np.tile(np.frombuffer(_PLAIN_TEMPLATE, dtype=np.uint8), (k, 1))
    lengths = np.fromiter(map(len, names), dtype=np.int64, count=k)
    blob = np.frombuffer(b"".join(names), dtype=np.uint8)
    rows = np.repeat(np.arange(k), lengths)
    cols = np.arange(len(blob)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    block[rows, cols] = blob
    size = np.asarray(sizes, dtype=np.uint64)
    for j in range(11):
        block[:, 124 + j] = ((size >> np.uint64(3 * (10 - j))) & np.uint64(7)) + np.uint64(48)
    checksum = block.sum(axis=1, dtype=np.int64)  # checksum field holds spaces here
    for j in range(6):
        block[:, 148 + j] = ((checksum >> (3 * (5 - j))) & 7) + 48
    block[:, 154] = 0
    block[:, 155] = 32
    return block.tobytes()


def member_header_size(name: bytes, size: int) -> int:
    """Length of :func:`member_header` without building it."""
    if is_plain(name, size):
        return BLOCK
    return 2 * BLOCK + padded(len(_pax_records(name, size)))


# --------------------------------------------------------------------- reading


@dataclass(frozen=True)
class TarMember:
    """One entry of a tar: where its headers start and where its data lies.

    ``header_offset`` is the first header block of the entry, extended
    headers (PAX ``x``, GNU ``L``/``K``) included, so reading from there
    yields the whole entry.
    """

    name: str
    header_offset: int
    data_offset: int
    size: int
    typeflag: bytes

    @property
    def is_file(self) -> bool:
        return self.typeflag in (b"0", b"\x00", b"7")

    @property
    def end(self) -> int:
        return self.data_offset + padded(self.size)


def _number(field: bytes, offset: int) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field, "big") & ~(0x80 << (8 * (len(field) - 1)))
        return value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad number {field!r} in tar header at offset {offset}") from None


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\x00", 1)[0].strip(b" ")
    try:
        expected = int(stored, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    if unsigned == expected:
        return True
    signed = unsigned - sum(b for b in block[:148] if b > 127) * 2 - sum(b for b in block[156:] if b > 127) * 2
    return signed == expected


def _parse_pax(data: bytes, offset: int) -> dict:
    records = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError(f"bad PAX record in header at offset {offset}") from None
        if length <= 0 or pos + length > len(data):
            raise TarFormatError(f"bad PAX record length in header at offset {offset}")
        record = data[space + 1 : pos + length - 1]
        keyword, _, value = record.partition(b"=")
        records[keyword.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


def iter_members(read_at: Callable[[int, int], bytes], file_size: int) -> Iterator[TarMember]:
    """Walk a tar's headers (all entry types) using positioned reads.

    ``read_at(offset, length)`` returns bytes of the archive; data blocks are
    skipped, never read, so indexing a shard costs one small read per member.
    Raises :class:`TarFormatError` naming the offset on anything malformed.
    """
    offset = 0
    long_name: Optional[bytes] = None
    pax: dict = {}
    global_pax: dict = {}
    entry_start: Optional[int] = None  # first header block of the current entry
    while offset + BLOCK <= file_size:
        block = read_at(offset, BLOCK)
        if len(block) < BLOCK:
            raise TarFormatError(f"truncated tar header at offset {offset}")
        if block == bytes(BLOCK):
            return
        if not _checksum_ok(block):
            raise TarFormatError(f"tar header checksum mismatch at offset {offset}")
        typeflag = block[156:157]
        size = _number(block[124:136], offset)
        data_offset = offset + BLOCK
        if data_offset + size > file_size:
            raise TarFormatError(
                f"tar member at offset {offset} claims {size} bytes but the file ends at {file_size}"
            )
        if typeflag in (b"x", b"g", b"L", b"K"):
            if typeflag != b"g" and entry_start is None:
                entry_start = offset
            data = read_at(data_offset, size)
            if typeflag == b"x":
                pax = _parse_pax(data, offset)
            elif typeflag == b"g":
                global_pax.update(_parse_pax(data, offset))
            elif typeflag == b"L":
                long_name = data.split(b"\x00", 1)[0]
            offset = data_offset + padded(size)
            continue
        header_offset = offset if entry_start is None else entry_start
        name = block[:100].split(b"\x00", 1)[0]
        if block[257:262] == b"ustar":
            prefix = block[345:500].split(b"\x00", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        merged = {**global_pax, **pax}
        if "path" in merged:
            name = merged["path"]
        elif long_name is not None:
            name = long_name
        if "size" in merged:
            try:
                size = int(merged["size"])
            except ValueError:
                raise TarFormatError(f"bad PAX size at offset {header_offset}") from None
        yield TarMember(
            name=name.decode("utf-8", "surrogateescape"),
            header_offset=header_offset,
            data_offset=data_offset,
            size=size,
            typeflag=typeflag,
        )
        offset = data_offset + padded(size)
        pax, long_name, entry_start = {}, None, None
    if offset < file_size:
        raise TarFormatError(f"truncated tar header at offset {offset}")


def iter_file_members(fileobj: BinaryIO, file_size: int) -> Iterator[TarMember]:
    """:func:`iter_members` over an open binary file."""

    def read_at(offset: int, length: int) -> bytes:
        fileobj.seek(offset)
        return fileobj.read(length)

    return iter_members(read_at, file_size)
