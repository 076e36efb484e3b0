"""Property-based fuzzing of the readers that face foreign bytes.

Random and mutated tar bytes given to the header reader and the tar
indexer, and damaged index files given to PackedIndex, must either give
correct data or raise our documented exceptions (TarFormatError,
ShardError, IndexFormatError), never another exception, a hang, or an
offset outside the file.  Example counts are bounded for CI.
"""

import io
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from loaders import ShardError, build_tar_index
from packer import BuildOptions, IndexFormatError, PackedIndex, build
from packer.tarfmt import TarFormatError, iter_members

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def valid_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("a/x.jpg", b"j" * 700), ("a/x.json", b"{}"), ("ü/" + "L" * 120 + ".txt", b"t" * 1500)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


VALID = valid_tar()


def check_reader(data: bytes) -> None:
    try:
        for member in iter_members(lambda off, n: data[off : off + n], len(data)):
            assert 0 <= member.header_offset < member.data_offset <= len(data)
            assert member.data_offset + member.size <= len(data)
    except TarFormatError:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    check_reader(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8), st.integers(0, len(VALID)))
def test_mutated_tars(flips, cut):
    data = bytearray(VALID)
    for position, value in flips:
        data[position] = value
    check_reader(bytes(data[:cut]))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6), st.integers(512, len(VALID)))
def test_mutated_tars_through_the_tar_indexer(tmp_path, flips, cut):
    data = bytearray(VALID)
    for position, value in flips:
        data[position] = value
    path = tmp_path / "f.tar"
    path.write_bytes(bytes(data[:cut]))
    try:
        index = build_tar_index(path)
    except ShardError:
        return
    ends = index.member_offset + index.member_size
    assert (ends <= np.uint64(cut)).all()


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    src = tmp_path_factory.mktemp("fz") / "src"
    src.mkdir()
    for i in range(20):
        (src / f"{i:02d}.txt").write_text(f"sample {i}")
    dst = src.parent / "dst"
    build(src, dst, BuildOptions(num_shards=2, quiet=True))
    return dst


@FUZZ
@given(name=st.sampled_from(["key_offsets", "sample_members", "member_offset", "member_size", "keys", "sample_shard"]),
       cut=st.integers(0, 200), flips=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=4))
def test_damaged_index_files_raise_index_format_error(small_dataset, tmp_path, name, cut, flips):
    import shutil

    copy = tmp_path / "copy"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(small_dataset, copy)
    path = copy / "index" / f"{name}.npy"
    data = bytearray(path.read_bytes())
    for position, value in flips:
        if position < len(data):
            data[position] = value
    path.write_bytes(bytes(data[: max(cut, len(data) - cut)]))
    try:
        PackedIndex(copy)
    except IndexFormatError:
        pass


def test_wrong_dtype_is_refused(small_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    path = copy / "index" / "member_offset.npy"
    np.save(path, np.load(path).astype(np.int64))
    with pytest.raises(IndexFormatError, match="member_offset.npy: dtype int64, expected uint64"):
        PackedIndex(copy)
