"""Tar bytes we write are read identically by tarfile, GNU tar and our reader."""

import io
import subprocess
import tarfile

import pytest

from packer.tarfmt import (
    BLOCK,
    END_OF_ARCHIVE,
    TarFormatError,
    iter_members,
    member_header,
    member_header_size,
    padded,
)


def archive(members):
    out = io.BytesIO()
    for name, data in members:
        header = member_header(name.encode("utf-8"), len(data))
        assert len(header) == member_header_size(name.encode("utf-8"), len(data))
        out.write(header + data + bytes(padded(len(data)) - len(data)))
    out.write(END_OF_ARCHIVE)
    return out.getvalue()


NAMES = [
    "a.txt",
    "dir/sub/x%2Ey.jpg",
    "ünïcødé/名前.json",
    "d/" + "L" * 150 + ".bin",
    "n" * 100,  # exactly fills the ustar name field
    "n" * 101,
    "with space and\nnewline.txt",
]


def test_tarfile_reads_names_sizes_and_bytes():
    members = [(name, bytes([i]) * (i * 300 + 1)) for i, name in enumerate(NAMES)]
    data = archive(members)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        got = [(m.name, tar.extractfile(m).read(), m.mode, m.uid, m.mtime) for m in tar.getmembers()]
    assert [(n, d) for n, d, *_ in got] == members
    assert all(mode == 0o644 and uid == 0 and mtime == 0 for _, _, mode, uid, mtime in got)


def test_pax_only_where_needed():
    assert member_header_size(b"short.txt", 10) == BLOCK
    assert member_header_size(b"n" * 100, 10) == BLOCK
    assert member_header_size(b"n" * 101, 10) > BLOCK
    assert member_header_size("ü.txt".encode(), 10) > BLOCK
    assert member_header_size(b"big.bin", 8**11) > BLOCK  # size field overflow


def test_huge_size_goes_to_pax_record():
    header = member_header(b"big.bin", 10 * 2**30)
    records = header[BLOCK : 2 * BLOCK]
    assert b" size=10737418240\n" in records


def test_gnu_tar_lists_what_we_wrote(tmp_path):
    members = [(name, b"x" * 700) for name in NAMES if "\n" not in name]
    path = tmp_path / "t.tar"
    path.write_bytes(archive(members))
    listing = subprocess.run(["tar", "-tf", str(path)], capture_output=True, text=True, check=True)
    assert listing.stdout.splitlines() == [name for name, _ in members]
    assert listing.stderr == ""


def test_reader_gives_offsets_of_our_writer():
    members = [(name, b"y" * (i * 1000 + 3)) for i, name in enumerate(NAMES)]
    data = archive(members)
    found = list(iter_members(lambda off, n: data[off : off + n], len(data)))
    assert [m.name for m in found] == [n for n, _ in members]
    for member, (_, payload) in zip(found, members):
        assert data[member.data_offset : member.data_offset + member.size] == payload


def test_reader_understands_python_tarfile_formats(tmp_path):
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        names = ["short.txt", "p/" * 60 + "deep.txt"] if fmt != tarfile.USTAR_FORMAT else ["short.txt", "p/" * 60 + "d.txt"]
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for name in names:
                info = tarfile.TarInfo(name)
                info.size = 5
                tar.addfile(info, io.BytesIO(b"hello"))
        data = buf.getvalue()
        found = [m for m in iter_members(lambda off, n: data[off : off + n], len(data)) if m.is_file]
        assert [m.name for m in found] == names, fmt
        assert all(data[m.data_offset : m.data_offset + 5] == b"hello" for m in found)


def test_reader_rejects_bad_checksum_with_offset():
    data = bytearray(archive([("a.txt", b"abc"), ("b.txt", b"def")]))
    data[BLOCK * 2 + 10] ^= 0xFF  # inside the second member's header
    with pytest.raises(TarFormatError, match="checksum mismatch at offset 1024"):
        list(iter_members(lambda off, n: bytes(data[off : off + n]), len(data)))


def test_reader_rejects_truncated_archive():
    data = archive([("a.txt", b"a" * 2000)])[:1500]
    with pytest.raises(TarFormatError, match="claims 2000 bytes"):
        list(iter_members(lambda off, n: data[off : off + n], len(data)))


def test_plain_headers_equal_one_by_one_headers():
    from packer.tarfmt import is_plain, plain_headers

    names = [b"a.txt", b"dir/x%2Ey.jpg", b"n" * 100, b"k.0", b"q.bin"]
    sizes = [0, 1, 8**11 - 1, 5, 123456789]
    assert all(is_plain(n, s) for n, s in zip(names, sizes))
    assert plain_headers(names, sizes) == b"".join(member_header(n, s) for n, s in zip(names, sizes))
    assert plain_headers([], []) == b""


def test_table_header_sizes_match_member_header_size(tmp_path):
    from packer import scan_tree

    for rel in ["plain.txt", "ü/x.txt", "d/" + "L" * 120 + ".bin", "e.jpg", "e.ünï", "h/" + "m" * 97 + ".j"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"z" * 10)
    table = scan_tree(tmp_path).table
    expected = []
    for i in range(table.num_samples):
        for m in table.members(i):
            expected.append(member_header_size(table.member_name(i, m).encode(), 10))
    assert table.member_header_size.tolist() == expected
    assert sorted(set(expected)) == [512, 1536]
