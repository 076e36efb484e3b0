"""The bad-input matrix of docs/bad-input.md: one test per case, through the
CLI where a user meets it.  Cases tested elsewhere are listed in the doc
with the test that covers them."""

import io
import json
import os
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from packer import BuildOptions, PackedIndex, PackerError, plan_build, write_planned
from packer.names import source_path

from conftest import run_cli


def tree(root: Path, files) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def error_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def manifest(dst: Path) -> dict:
    return json.loads((dst / "index.json").read_text())


def members_of(dst: Path):
    names = []
    for tar in sorted(dst.glob("*.tar")):
        with tarfile.open(tar) as t:
            names += [(m.name, t.extractfile(m).read()) for m in t.getmembers()]
    return names


@pytest.mark.parametrize("make, reason", [
    (lambda d: os.symlink(d / "missing.txt", d / "broken.txt"), "broken symbolic link"),
    (lambda d: os.symlink(d / "loop.txt", d / "loop.txt"), "looping symbolic link"),
])
def test_broken_and_looping_symlinks_stop_or_are_skipped_and_recorded(tmp_path, make, reason):
    src = tree(tmp_path / "src", {"a.txt": b"a"})
    make(src)
    result = run_cli("build", str(src), str(tmp_path / "d1"))
    assert result.returncode == 1 and reason in error_line(result)
    assert not (tmp_path / "d1" / "index.json").exists()
    result = run_cli("build", str(src), str(tmp_path / "d2"), "--on-error", "skip", "-q")
    assert result.returncode == 0, result.stderr
    skipped = manifest(tmp_path / "d2")["skipped"]
    assert len(skipped) == 1 and skipped[0]["reason"].startswith(reason)


def test_file_growing_between_scan_and_write_is_named(tmp_path):
    src = tree(tmp_path / "src", {f"{i}.bin": bytes(100) for i in range(5)})
    dst = tmp_path / "dst"
    plan_build(src, dst, BuildOptions(quiet=True))
    with open(src / "3.bin", "ab") as f:
        f.write(b"more")
    with pytest.raises(PackerError, match=r"3\.bin"):
        write_planned(dst, workers=1, quiet=True)
    assert not (dst / "index.json").exists() and not list(dst.glob("*.tar"))


def test_zero_byte_files_become_empty_members(tmp_path):
    src = tree(tmp_path / "src", {"a.txt": b"", "a.json": b"{}", "b.bin": b""})
    result = run_cli("build", str(src), str(tmp_path / "dst"), "-q")
    assert result.returncode == 0, result.stderr
    assert sorted(members_of(tmp_path / "dst")) == [("a.json", b"{}"), ("a.txt", b""), ("b.bin", b"")]
    assert run_cli("verify", str(tmp_path / "dst"), "--quiet").returncode == 0


def test_newlines_backslashes_and_leading_dashes_round_trip(tmp_path):
    names = {"line\nbreak.txt": b"1", "back\\slash.txt": b"2", "-rf.txt": b"3", "--help.txt": b"4", "dir/-x.txt": b"5"}
    src = tree(tmp_path / "-src", names)
    # a SRC that starts with a dash still works after `--`
    result = run_cli("build", "-q", "--", str(src.relative_to(tmp_path)), "dst", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    index = PackedIndex(tmp_path / "dst")
    recovered = {source_path(index.key(i), ext) for i in range(index.num_samples) for ext, _, _ in index.members(i)}
    assert recovered == set(names)
    for name, data in members_of(tmp_path / "dst"):
        assert "\n" not in name  # the newline is escaped as %0A in the member name
    assert {data for _, data in members_of(tmp_path / "dst")} == set(names.values())


def test_invalid_utf8_name_stops_or_is_skipped_and_recorded(tmp_path):
    src = tree(tmp_path / "src", {"good.txt": b"g"})
    with open(os.path.join(os.fsencode(src), b"bad\xff.txt"), "wb") as f:
        f.write(b"x")
    result = run_cli("build", str(src), str(tmp_path / "d1"))
    assert result.returncode == 1 and "not valid UTF-8" in error_line(result)
    result = run_cli("build", str(src), str(tmp_path / "d2"), "--on-error", "skip", "-q")
    assert result.returncode == 0
    assert [s["reason"] for s in manifest(tmp_path / "d2")["skipped"]] == ["name is not valid UTF-8"]


def test_nothing_written_has_an_absolute_or_dotdot_path(tmp_path):
    src = tree(tmp_path / "src", {"..a.txt": b"1", "..d/x.txt": b"2", "a..b/..c.txt": b"3", "...x.txt": b"4"})
    result = run_cli("build", str(src), str(tmp_path / "dst"), "--include-hidden", "-q")
    assert result.returncode == 0, result.stderr
    names = [name for name, _ in members_of(tmp_path / "dst")]
    assert len(names) == 4
    for name in names:
        assert not name.startswith("/") and ".." not in name.split("/")
    written = [p.relative_to(tmp_path / "dst") for p in (tmp_path / "dst").rglob("*")]
    assert all(".." not in p.parts for p in written)


@pytest.mark.parametrize("files, flags, message", [
    ({"x.JPG": b"1", "x.jpg": b"2"}, [], "differs only in case"),
    ({"c/x.jpg": b"1", "c/x.cls": b"7"}, ["--labels-from-dir"], "a .cls file where --labels-from-dir adds the label"),
])
def test_duplicate_key_and_extension_from_different_files_is_refused(tmp_path, files, flags, message):
    src = tree(tmp_path / "src", files)
    result = run_cli("build", str(src), str(tmp_path / "d1"), *flags)
    assert result.returncode == 1 and message in error_line(result)
    result = run_cli("build", str(src), str(tmp_path / "d2"), *flags, "--on-error", "skip", "-q")
    assert result.returncode == 0
    assert len(manifest(tmp_path / "d2")["skipped"]) == 1 and PackedIndex(tmp_path / "d2").num_samples == 1


def test_destination_inside_a_file_is_a_one_line_error(tmp_path):
    src = tree(tmp_path / "src", {"a.txt": b"a"})
    (tmp_path / "file").write_bytes(b"")
    result = run_cli("build", str(src), str(tmp_path / "file" / "dst"))
    assert result.returncode == 1 and "file" in error_line(result)


# ------------------------------------------------------- beyond 32-bit counters


def test_offsets_past_4_gib_are_exact_in_the_layout_and_tar_headers():
    from packer.layout import compute_layout
    from packer.table import SampleTable, header_sizes
    from packer.tarfmt import iter_members, member_header

    sizes = np.array([3 << 30, 5 << 30, 9 << 30, 7], dtype=np.uint64)  # 9 GiB needs a PAX size
    keys = b"abcd"
    table = SampleTable(
        keys=np.frombuffer(keys, np.uint8).copy(), key_offsets=np.arange(5, dtype=np.uint64),
        sample_members=np.arange(5, dtype=np.uint64), member_ext=np.zeros(4, np.uint16), member_size=sizes,
        member_header_size=np.zeros(4, np.uint32), member_mtime_ns=np.zeros(4, np.int64), extensions=["bin"],
    )
    table.member_header_size = header_sizes(table)
    layout = compute_layout(table, np.array([0, 4]))
    expected, position = [], 0
    for key, size in zip(keys, sizes.tolist()):
        header = member_header(bytes([key]) + b".bin", size)
        expected.append(position + len(header))
        position += len(header) + -(-size // 512) * 512
    assert layout.member_offset.tolist() == expected and expected[-1] > 17 << 30
    # the reader takes the PAX size of the 9 GiB member back
    blob = member_header(b"c.bin", 9 << 30)
    found = list(iter_members(lambda off, n: (blob + bytes(1024))[off : off + n] if off < len(blob) else bytes(n),
                              len(blob) + (9 << 30) + 1024))
    assert found[0].size == 9 << 30


def test_epoch_arithmetic_beyond_32_bits():
    from loaders import Deal, EpochOrder

    n = (1 << 33) + 12345
    deal = Deal(n, world_size=24, unit=256, drop_last=False, start=(1 << 32) + 24 * 256)
    assert deal.rank_share * 24 >= n - deal.start and deal.end - n < 24
    positions = deal.worker_positions(n - 10_000, deal.end, rank=23, worker=3, num_workers=4)
    assert len(positions) and positions.max() < deal.end and positions.dtype == np.int64
    assert deal.position_after(deal.rank_share) >= n
    counts = np.array([1 << 31] * 4 + [12345], dtype=np.int64)
    order = EpochOrder.build(counts, seed=1, epoch=2, chunk_samples=1 << 16, window_samples=1 << 20)
    picked = order.at(np.array([0, (1 << 32) + 7, n - 1 - 12345 + 12345 - 1]))
    assert picked.max() < counts.sum() and len(set(picked.tolist())) == 3


# ------------------------------------------------------- corrupt shards in the loaders


def test_flipped_byte_is_caught_by_verify_in_both_loaders(built, tmp_path):
    import shutil

    from loaders import IndexedTarDataset, ShardError, StreamingTarDataset

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    victim = sorted(copy.glob("*.tar"))[3]
    index = PackedIndex(copy)
    first = int(np.flatnonzero(np.asarray(index.sample_shard) == 3)[0])
    _, offset, _ = index.members(first)[0]
    with open(victim, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert IndexedTarDataset(copy)[first] != IndexedTarDataset(built)[first]  # unnoticed without verify
    with pytest.raises(ShardError, match=rf"{victim.name}: SHA-256 .* differs"):
        IndexedTarDataset(copy, verify=True)[first]
    with pytest.raises(ShardError, match=rf"{victim.name}: SHA-256"):
        list(StreamingTarDataset(copy, verify=True))
    assert len(list(StreamingTarDataset(built, verify=True))) == 3000
    with pytest.raises(ShardError, match=rf"{victim.name}: SHA-256"):  # all its shards, by name: its index
        IndexedTarDataset(sorted(copy.glob("*.tar")), verify=True)[first]
    some = IndexedTarDataset(sorted(copy.glob("*.tar"))[2:4], verify=True)  # some of them: hashes from its index
    with pytest.raises(ShardError, match=rf"{victim.name}: SHA-256"):
        some[len(PackedIndex(copy).shard_samples(2))]  # the first sample of shard 3
    with pytest.raises(ValueError, match="verify=True needs"):  # a foreign tar among them: no hashes
        foreign = copy / "foreign.tar"
        with tarfile.open(foreign, "w") as tar:
            tar.add(__file__, arcname="x.py")
        IndexedTarDataset([sorted(copy.glob("shard-*.tar"))[0], foreign], verify=True)


# ------------------------------------------------------- untrusted content


class Payload:
    """A class a pickle would import and build."""


def test_untrusted_members_are_never_unpickled(tmp_path):
    import pickle

    import torch
    from PIL import Image

    from loaders import DecodeError, IndexedTarDataset

    buffer = io.BytesIO()
    torch.save({"obj": Payload()}, buffer)
    files = {"a.pyd": pickle.dumps(Payload()), "a.pickle": pickle.dumps([1]), "b.json": b"{not json",
             "c.pt": buffer.getvalue()}
    src = tree(tmp_path / "src", files)
    assert run_cli("build", str(src), str(tmp_path / "dst"), "-q").returncode == 0
    dataset = IndexedTarDataset(tmp_path / "dst", decode="default")
    by_key = {dataset.index.key(i): i for i in range(len(dataset))}
    sample = dataset[by_key["a"]]
    assert sample["pyd"] == files["a.pyd"] and sample["pickle"] == files["a.pickle"]  # bytes, not objects
    with pytest.raises(DecodeError, match=r"sample 'b': cannot decode member \.json"):
        dataset[by_key["b"]]
    with pytest.raises(DecodeError, match=r"sample 'c': cannot decode member \.pt"):
        dataset[by_key["c"]]
    assert Image.MAX_IMAGE_PIXELS is not None  # the decompression-bomb limit stays on


def test_foreign_tar_with_a_sample_split_apart_warns(tmp_path):
    from loaders import IndexedTarDataset

    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        for name in ("a/x.jpg", "a/y.jpg", "a/x.json"):  # a/x's members are not together
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    for attempt in ("builds the index", "loads it from the cache"):
        with pytest.warns(UserWarning, match=r"t\.tar: the members of 1 key\(s\) are not next to each other \(e\.g\. 'a/x'\)"):
            dataset = IndexedTarDataset(tmp_path / "t.tar")
        assert len(dataset) == 3  # read as webdataset reads it
    assert list(tmp_path.glob("t.tar.pkidx.npz"))


def test_foreign_tar_with_links_warns_that_they_are_left_out(tmp_path):
    """Hard and symbolic links carry no data of their own: like webdataset,
    the loaders leave them out, but say so instead of losing samples
    silently.  Directories are not worth a word."""
    from loaders import IndexedTarDataset

    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        folder = tarfile.TarInfo("d")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        info = tarfile.TarInfo("d/a.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
        for name, kind in (("d/b.txt", tarfile.LNKTYPE), ("d/c.txt", tarfile.SYMTYPE)):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, "d/a.txt"
            tar.addfile(link)
    for attempt in ("builds the index", "loads it from the cache"):
        with pytest.warns(UserWarning, match=r"t\.tar: 2 member\(s\) that are not regular files were left out \(e\.g\. 'd/b\.txt', a hard link\)"):
            dataset = IndexedTarDataset(tmp_path / "t.tar")
        assert [dataset[i]["__key__"] for i in range(len(dataset))] == ["d/a"]
    with tarfile.open(tmp_path / "plain.tar", "w") as tar:
        tar.addfile(folder)
        tar.addfile(info, io.BytesIO(b"abc"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(IndexedTarDataset(tmp_path / "plain.tar")) == 1
