"""The index files: binary arrays, DALI v1.2 files, incomplete datasets."""

import json

import numpy as np
import pytest

from packer import BuildOptions, IndexFormatError, PackedIndex, UsageError, build
from packer.examples import make_blob_tree


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blobs") / "src"
    make_blob_tree(root, count=500, size=700, per_dir=100)
    return root


def test_dali_index_lines_point_at_member_data(blobs, tmp_path):
    dst = tmp_path / "d"
    build(blobs, dst, BuildOptions(num_shards=3, dali_index=True, quiet=True))
    index = PackedIndex(dst)
    total = 0
    for j, shard in enumerate(index.shards):
        data = (dst / shard["name"]).read_bytes()
        lines = (dst / shard["name"]).with_suffix(".idx").read_text().splitlines()
        assert lines[0] == f"v1.2 {shard['num_samples']}"
        for line, i in zip(lines[1:], index.shard_samples(j)):
            ext, offset, size, name = line.split(" ")
            assert (ext, name) == ("bin", index.member_names(i)[0])
            assert data[int(offset) : int(offset) + int(size)] == (blobs / index.source_paths(i)[0]).read_bytes()
        total += len(lines) - 1
    assert total == 500


def test_dali_refuses_names_with_spaces(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a b.txt").write_text("x")
    with pytest.raises(UsageError, match="white space"):
        build(src, tmp_path / "d", BuildOptions(dali_index=True, quiet=True))
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_index_is_compact_and_memory_mapped(blobs, tmp_path):
    dst = tmp_path / "d"
    build(blobs, dst, BuildOptions(num_shards=2, quiet=True))
    index = PackedIndex(dst)
    assert isinstance(index.member_offset, np.memmap)
    key_bytes = index.keys.nbytes
    array_bytes = sum((dst / "index" / f"{name}.npy").stat().st_size for name in index.manifest["index"]["arrays"])
    # docs/format.md: 28 bytes per sample + 18 per member, plus the two N+1 sentinels
    # (key_offsets, sample_members) and a 128-byte .npy header per file
    n, m = index.num_samples, len(index.member_size)
    assert array_bytes - key_bytes == 28 * n + 18 * m + 2 * 8 + 128 * len(index.manifest["index"]["arrays"])


def test_missing_or_foreign_manifest_is_a_clear_error(blobs, tmp_path):
    dst = tmp_path / "d"
    build(blobs, dst, BuildOptions(num_shards=2, quiet=True))
    manifest = json.loads((dst / "index.json").read_text())
    (dst / "index.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="format version 99"):
        PackedIndex(dst)
    (dst / "index.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        PackedIndex(dst)
    (dst / "index.json").write_text(json.dumps(manifest))
    (dst / "index" / "member_size.npy").unlink()
    with pytest.raises(IndexFormatError, match="member_size.npy: missing"):
        PackedIndex(dst)
