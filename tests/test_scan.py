"""Scan: sorted grouping into samples, and the documented rule for odd entries."""

import os
import socket

import numpy as np
import pytest

from packer import PackerError, scan_tree


def write(root, rel, data=b"x"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def samples(result):
    t = result.table
    return [(t.key(i), [t.extensions[int(t.member_ext[m])] for m in t.members(i)]) for i in range(t.num_samples)]


def test_groups_by_stem_in_sorted_order(tmp_path):
    for rel in ["b/2.json", "b/2.jpg", "a.txt", "b/1.jpg", "b/c/0.png", "b/10.jpg", "a.cls"]:
        write(tmp_path, rel)
    got = samples(scan_tree(tmp_path))
    assert got == [
        ("a", ["cls", "txt"]),
        ("b/1", ["jpg"]),
        ("b/10", ["jpg"]),
        ("b/2", ["jpg", "json"]),
        ("b/c/0", ["png"]),
    ]


def test_skipped_entries_are_reported_with_reasons(tmp_path):
    write(tmp_path, "ok.jpg")
    write(tmp_path, ".hidden.jpg")
    write(tmp_path, ".git/config.txt")
    write(tmp_path, "LICENSE")
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path / "sub", tmp_path / "dirlink")
    os.mkfifo(tmp_path / "pipe.fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    try:
        result = scan_tree(tmp_path)
    finally:
        sock.close()
    assert samples(result) == [("ok", ["jpg"])]
    assert {(s.path, s.reason) for s in result.skipped} == {
        (".hidden.jpg", "hidden"),
        (".git", "hidden"),
        ("LICENSE", "no extension"),
        ("dirlink", "symbolic link to a directory (not followed)"),
        ("pipe.fifo", "not a regular file (FIFO)"),
        ("s.sock", "not a regular file (socket)"),
    }


def test_include_hidden(tmp_path):
    write(tmp_path, ".hidden.jpg")
    write(tmp_path, ".git/config.txt")
    got = samples(scan_tree(tmp_path, include_hidden=True))
    assert got == [("%2Ehidden", ["jpg"]), (".git/config", ["txt"])]


def test_symlinked_files_are_followed(tmp_path):
    target = write(tmp_path / "elsewhere", "real.bin", b"payload")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(target, src / "link.bin")
    result = scan_tree(src)
    assert samples(result) == [("link", ["bin"])]
    assert result.symlinks_followed == 1
    assert int(result.table.member_size[0]) == 7


@pytest.mark.parametrize("make, reason", [
    (lambda d: os.symlink(d / "missing", d / "broken.jpg"), "broken symbolic link"),
    (lambda d: os.symlink(d / "loop.jpg", d / "loop.jpg"), "looping symbolic link"),
    (lambda d: (write(d, "x.JPG"), write(d, "x.jpg")), "differs only in case"),
])
def test_bad_entries_stop_or_skip(tmp_path, make, reason):
    write(tmp_path, "good.txt")
    make(tmp_path)
    with pytest.raises(PackerError, match=reason):
        scan_tree(tmp_path)
    result = scan_tree(tmp_path, on_error="skip")
    assert ("good", ["txt"]) in samples(result)
    assert any(reason in s.reason for s in result.skipped)


def test_invalid_utf8_name_stops_or_skips(tmp_path):
    write(tmp_path, "good.txt")
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.txt"), "wb") as f:
        f.write(b"x")
    with pytest.raises(PackerError, match="not valid UTF-8"):
        scan_tree(tmp_path)
    result = scan_tree(tmp_path, on_error="skip")
    assert samples(result) == [("good", ["txt"])]
    assert [s.reason for s in result.skipped] == ["name is not valid UTF-8"]


def test_first_dot_rule_groups_multi_part_extensions(tmp_path):
    for rel in ["0001.jpg", "0001.seg.png", "0001.json"]:
        write(tmp_path, rel)
    assert samples(scan_tree(tmp_path, key_rule="first-dot")) == [("0001", ["jpg", "json", "seg.png"])]
    assert samples(scan_tree(tmp_path)) == [("0001", ["jpg", "json"]), ("0001%2Eseg", ["png"])]


def nested_tree(root):
    for rel in ["r1.txt", "r0.jpg", "a/x.jpg", "a/x.json", "a/b/y.png", "a/b/c/z.bin", "a/b/c/d/w.bin",
                "b/1.txt", "b/.h.txt", "b/NOEXT", "c.d/e.f.txt", "z/last.txt"]:
        write(root, rel, rel.encode())
    for i in range(12):
        write(root, f"many/{i:02d}/f{i}.bin", bytes(i))
    os.symlink(root / "a", root / "link_to_a")
    os.symlink(root / "r1.txt", root / "b" / "link.txt")


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_parallel_scan_is_identical_to_serial(tmp_path, workers):
    nested_tree(tmp_path)
    serial = scan_tree(tmp_path)
    parallel = scan_tree(tmp_path, workers=workers)
    for name, array in serial.table.arrays().items():
        assert np.array_equal(array, parallel.table.arrays()[name]), name
    assert serial.table.extensions == parallel.table.extensions
    assert serial.skipped == parallel.skipped
    assert serial.symlinks_followed == parallel.symlinks_followed == 1
    assert [k for k, _ in samples(serial)][:4] == ["r0", "r1", "a/x", "a/b/y"]


def test_parallel_scan_raises_the_first_error_in_scan_order(tmp_path):
    nested_tree(tmp_path)
    os.symlink(tmp_path / "nowhere", tmp_path / "many" / "03" / "broken.bin")
    os.symlink(tmp_path / "nowhere", tmp_path / "many" / "07" / "broken.bin")
    with pytest.raises(PackerError, match=r"many/03/broken\.bin"):
        scan_tree(tmp_path, workers=4)


def test_extension_clashing_with_reader_fields_stops_or_skips(tmp_path):
    write(tmp_path, "good.txt")
    write(tmp_path, "x.__url__")
    with pytest.raises(PackerError, match="x.__url__: extension starts with '__'"):
        scan_tree(tmp_path)
    assert samples(scan_tree(tmp_path, on_error="skip")) == [("good", ["txt"])]
