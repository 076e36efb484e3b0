"""IndexedTarDataset and ShardAwareSampler on real shards, workers and ranks."""

import io
import json
import os
import pickle
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from loaders import IndexedTarDataset, ShardAwareSampler, ShardError
from packer import PackedIndex
from packer.names import source_path

from conftest import REPO, run_torchrun


def source_files(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_matches_source(dataset, files, rename=lambda key, ext: source_path(key, ext)):
    seen = set()
    for i in range(len(dataset)):
        sample = dataset[i]
        for ext, value in sample.items():
            if ext.startswith("__"):
                continue
            rel = rename(sample["__key__"], ext)
            assert value == files[rel], rel
            seen.add(rel)
    assert seen == set(files)


def test_packed_dataset_equals_source_byte_for_byte(image_tree, built):
    dataset = IndexedTarDataset(built)
    assert len(dataset) == 3000
    assert_matches_source(dataset, source_files(image_tree))


def test_tars_by_gnu_tar_webdataset_and_tarfile_pax(tmp_path):
    src = tmp_path / "src"
    files = {}
    for i in range(40):
        stem = f"d{i % 3}/" + ("L" * 188 + f"{i:02d}" if i % 10 == 0 else f"s{i:03d}")
        for ext, data in (("bin", os.urandom(i * 37 + 1)), ("txt", f"text {i}".encode())):
            path = src / f"{stem}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            files[f"{stem}.{ext}"] = data
    # GNU tar (sorted, as WebDataset asks): names start with "./", directories are entries too
    subprocess.run(["tar", "--sort=name", "-cf", str(tmp_path / "gnu.tar"), "-C", str(src), "."], check=True)
    gnu = IndexedTarDataset(str(tmp_path / "gnu.tar"))
    assert len(gnu) == 40
    assert_matches_source(gnu, files, rename=lambda key, ext: f"{key[2:]}.{ext}")
    # Python tarfile, PAX format, 200-byte names
    with tarfile.open(tmp_path / "pax.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            info = tarfile.TarInfo(rel)
            info.size = len(files[rel])
            tar.addfile(info, io.BytesIO(files[rel]))
    pax = IndexedTarDataset(tmp_path / "pax.tar")
    assert max(len(pax[i]["__key__"]) for i in range(len(pax))) == 193
    assert_matches_source(pax, files, rename=lambda key, ext: f"{key}.{ext}")
    # webdataset's ShardWriter, several shards, brace pattern
    import webdataset as wds

    by_key = {}
    for rel, data in files.items():
        key, ext = rel.rsplit(".", 1)
        by_key.setdefault(key, {})[ext] = data
    with wds.ShardWriter(str(tmp_path / "wds-%02d.tar"), maxcount=15) as sink:
        for key in sorted(by_key):
            sink.write({"__key__": key, **by_key[key]})
    written = IndexedTarDataset(str(tmp_path / "wds-{00..02}.tar"))
    assert len(written) == 40
    assert_matches_source(written, files, rename=lambda key, ext: f"{key}.{ext}")
    assert (tmp_path / "wds-00.tar.pkidx.npz").exists()


def test_list_like_indexing(built):
    dataset = IndexedTarDataset(built)
    assert dataset[-1]["__key__"] == dataset[len(dataset) - 1]["__key__"]
    assert dataset[np.int64(5)]["__index__"] == 5
    for bad in (len(dataset), -len(dataset) - 1):
        with pytest.raises(IndexError):
            dataset[bad]
    with pytest.raises(TypeError):
        dataset[1.5]


def test_decoders_and_transform(built):
    from PIL import Image

    dataset = IndexedTarDataset(built, decode="default", transform=lambda s: (s["jpg"].size, s["json"]["label"]))
    size, label = dataset[0]
    assert size == (24, 24) and 0 <= label < 10
    custom = IndexedTarDataset(built, decode={"json": lambda b: len(b)})
    sample = custom[0]
    assert isinstance(sample["jpg"], Image.Image) and isinstance(sample["json"], int)


def test_pickles_without_the_index(built):
    dataset = IndexedTarDataset(built)
    blob = pickle.dumps(dataset)
    assert len(blob) < 1000
    clone = pickle.loads(blob)
    assert len(clone) == len(dataset) and clone[7] == dataset[7]


def keys_of_batch(batch):
    return [s["__key__"] for s in batch]


@pytest.mark.parametrize("context, workers, persistent", [
    ("fork", 2, False), ("spawn", 2, True), ("forkserver", 2, False), ("fork", 0, False),
])
def test_dataloader_workers_read_every_sample_once(built, context, workers, persistent):
    loader = DataLoader(
        IndexedTarDataset(built), batch_size=64, num_workers=workers, collate_fn=keys_of_batch,
        multiprocessing_context=context if workers else None, persistent_workers=persistent,
    )
    for _ in range(2 if persistent else 1):
        keys = [k for batch in loader for k in batch]
        assert len(keys) == 3000 and len(set(keys)) == 3000


def test_missing_truncated_and_changed_shards_name_the_shard(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    dataset = IndexedTarDataset(copy)
    last_shard = sorted(copy.glob("*.tar"))[-1]
    victim = int(np.flatnonzero(np.asarray(dataset.index.sample_shard) == len(dataset.index.shard_paths) - 1)[-1])
    data = last_shard.read_bytes()
    last_shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=rf"{last_shard.name}: shard is \d+ bytes but its index says \d+.*sample {victim}"):
        dataset[victim]
    last_shard.unlink()
    with pytest.raises(ShardError, match=rf"{last_shard.name}: shard missing \(needed for sample {victim}\)"):
        IndexedTarDataset(copy)[victim]


def test_tar_index_cache_is_reused_and_rebuilt_when_the_tar_changes(tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        for name, data in (("x.txt", b"one"), ("y.txt", b"two")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert [s["txt"] for s in IndexedTarDataset(tmp_path / "a.tar")] == [b"one", b"two"]
    cache = tmp_path / "a.tar.pkidx.npz"
    first = cache.stat().st_mtime_ns
    IndexedTarDataset(tmp_path / "a.tar")
    assert cache.stat().st_mtime_ns == first  # reused
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        info = tarfile.TarInfo("z.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"three"))
    assert [s["txt"] for s in IndexedTarDataset(tmp_path / "a.tar")] == [b"three"]


def test_read_only_tar_directory_caches_in_the_user_cache(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    with tarfile.open(ro / "a.tar", "w") as tar:
        info = tarfile.TarInfo("x.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: directory permissions are not enforced")
        assert len(IndexedTarDataset(ro / "a.tar")) == 1
        assert list((tmp_path / "cache" / "packer" / "tarindex").glob("*.pkidx.npz"))
    finally:
        ro.chmod(0o755)


def test_user_cache_is_used_when_beside_is_not_writable(tmp_path, monkeypatch):
    """Root ignores directory permissions, so make 'beside' impossible instead."""

    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        info = tarfile.TarInfo("x.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    (tmp_path / "a.tar.pkidx.npz").mkdir()  # a directory where the cache file would go
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert len(IndexedTarDataset(tmp_path / "a.tar")) == 1
    assert len(list((tmp_path / "cache" / "packer" / "tarindex").glob("*.pkidx.npz"))) == 1


# ---------------------------------------------------------------- sampler


def test_sampler_order_changes_per_epoch_and_equals_the_streaming_order(built):
    from loaders import StreamingTarDataset

    dataset = IndexedTarDataset(built)
    sampler = ShardAwareSampler(dataset, seed=4, rank=0, world_size=1)
    e0 = list(sampler)  # a complete iteration moves to the next epoch
    e1 = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == e0 != e1 and sorted(e0) == list(range(3000))
    stream = StreamingTarDataset(built, seed=4, rank=0, world_size=1)
    assert [s["__index__"] for s in stream] == e0
    # a window of ~1024 samples is a few runs of consecutive samples: reads stay local
    first_window = sorted(e0[: int(sampler.order(0).window_start[1])])
    assert 1024 <= len(first_window) and 1 + np.count_nonzero(np.diff(first_window) != 1) <= 9


@pytest.mark.parametrize("n_world", [2, 3, 7])
def test_sampler_shares_are_equal_and_in_global_batch_order(built, n_world):
    dataset = IndexedTarDataset(built)
    single = list(ShardAwareSampler(dataset, seed=1, rank=0, world_size=1))
    for drop_last in (False, True):
        shares = [list(ShardAwareSampler(dataset, seed=1, rank=r, world_size=n_world, drop_last=drop_last, batch_size=8)) for r in range(n_world)]
        assert len({len(s) for s in shares}) == 1
        merged = [i for k in range(0, len(shares[0]), 8) for s in shares for i in s[k : k + 8]]
        if drop_last:
            assert merged == single[: len(merged)] and 3000 - len(merged) <= n_world - 1
        else:
            assert merged[:3000] == single and merged[3000:] == single[: len(merged) - 3000]


def test_sampler_reads_rank_from_the_environment(built, monkeypatch):
    dataset = IndexedTarDataset(built)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    sampler = ShardAwareSampler(dataset)
    assert (sampler.rank, sampler.world_size, len(sampler)) == (1, 4, 750)
    assert list(sampler) == list(ShardAwareSampler(dataset, rank=1, world_size=4))


@pytest.mark.parametrize("workers, drop_last", [(0, False), (2, True)])
def test_torchrun_two_ranks_get_equal_disjoint_shares(built, tmp_path, workers, drop_last):
    out = tmp_path / "ranks.json"
    args = ["--data", str(built), "--workers", str(workers), "--out", str(out)] + (["--drop-last"] if drop_last else [])
    result = run_torchrun(REPO / "tests" / "helpers" / "ddp_indexed.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = json.loads(out.read_text())
    for epoch in range(2):
        shares = [r["epochs"][epoch] for r in ranks]
        assert len(shares[0]) == len(shares[1]) == ranks[0]["len"] == 1500
        assert not set(shares[0]) & set(shares[1])
        assert set(shares[0]) | set(shares[1]) == set(range(3000))
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]


def test_sampler_accepts_a_freshly_unpickled_dataset(built):
    clone = pickle.loads(pickle.dumps(IndexedTarDataset(built)))
    sampler = ShardAwareSampler(clone, rank=0, world_size=1)
    assert len(sampler) == 3000 and sorted(sampler) == list(range(3000))


def test_batched_fetch_equals_single_items(built):
    dataset = IndexedTarDataset(built)
    indices = [5, -1, 17, 2999, 0]
    assert dataset.__getitems__(indices) == [dataset[i] for i in indices]
    with pytest.raises(IndexError):
        dataset.__getitems__([0, 3000])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Samples of one file and of several, awkward keys, several shards."""
    from packer import BuildOptions, build

    src = tmp_path_factory.mktemp("mixed-src")
    for i in range(60):
        d = src / ("ünï cøde" if i % 3 else "plain")
        d.mkdir(exist_ok=True)
        (d / f"s {i:03d}.bin").write_bytes(bytes([i]) * (i * 37 % 900 + 1))
        if i % 4 == 0:
            (d / f"s {i:03d}.json").write_bytes(json.dumps({"i": i}).encode())
        if i % 10 == 0:
            (d / f"s {i:03d}.big").write_bytes(os.urandom(20000))
    dst = tmp_path_factory.mktemp("mixed") / "ds"
    build(src, dst, BuildOptions(quiet=True, workers=1, num_shards=4))
    return dst


def test_batched_fetch_of_mixed_samples_equals_single_items(mixed):
    dataset = IndexedTarDataset(mixed)
    n = len(dataset)
    assert n == 60
    order = list(np.random.default_rng(0).permutation(n).tolist()) + [-1, -n, 7, 7]
    assert dataset.__getitems__(order) == [dataset[i] for i in order]
    assert [s["__index__"] for s in dataset.__getitems__(order)] == [i % n for i in order]
    as_numpy = list(np.arange(20, dtype=np.int64))
    assert dataset.__getitems__(as_numpy) == [dataset[i] for i in range(20)]


@pytest.mark.parametrize("bad, error", [(60, IndexError), (-61, IndexError), (2**70, IndexError), ("3", TypeError), (1.5, TypeError)])
def test_batched_fetch_raises_what_a_single_item_raises(mixed, bad, error):
    dataset = IndexedTarDataset(mixed)
    with pytest.raises(error):
        dataset[bad]
    with pytest.raises(error):
        dataset.__getitems__(list(range(10)) + [bad])


def test_batched_fetch_names_a_missing_shard(mixed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mixed, copy)
    dataset = IndexedTarDataset(copy)
    (copy / dataset.index.shard_paths[2].rsplit("/", 1)[-1]).unlink()
    victim = int(np.flatnonzero(np.asarray(dataset.index.sample_shard) == 2)[0])
    with pytest.raises(ShardError, match=rf"shard missing \(needed for sample {victim}\)"):
        dataset.__getitems__(list(range(victim + 1)))


@pytest.mark.parametrize("kind", ["single", "joint", "separate"])
def test_batched_fetch_names_a_shard_cut_while_open(mixed, tmp_path, kind):
    """A shard truncated after it was opened: the read comes back short and
    the error names the shard and the sample, in each way a batch reads a
    sample (one file; several small files in one read; a file per read)."""
    copy = tmp_path / "copy"
    shutil.copytree(mixed, copy)
    dataset = IndexedTarDataset(copy)
    index = dataset.index
    members = np.asarray(index.sample_members)
    offsets, sizes = np.asarray(index.member_offset), np.asarray(index.member_size)

    def how(i):  # how a batch reads sample i: the rule in _raw_batch
        lo, hi = int(members[i]), int(members[i + 1])
        if hi - lo == 1:
            return "single"
        return "joint" if offsets[hi - 1] + sizes[hi - 1] - offsets[lo] < 16384 else "separate"

    victim = next(i for i in range(len(dataset)) if how(i) == kind)
    shard = int(index.sample_shard[victim])
    # Samples of other shards; only one-file samples with "single", since a
    # batch takes the lean loop only when every sample has one file.
    others = [i for i in range(len(dataset)) if index.sample_shard[i] != shard and (kind != "single" or how(i) == kind)][:9]
    assert len(others) == 9
    dataset.__getitems__(others + [victim])  # opens the shard
    with open(copy / index.shard_paths[shard].rsplit("/", 1)[-1], "r+b") as f:
        f.truncate(int(np.asarray(index.member_offset)[members[victim]]) + 1)
    with pytest.raises(ShardError, match=rf"shard ends before sample {victim} "):
        dataset.__getitems__(others + [victim])


def test_close_releases_the_descriptors_it_opened(built):
    dataset = IndexedTarDataset(built)
    for i in range(0, 3000, 97):
        dataset[i]
    opened = list(dataset._files._owned.values())
    assert opened
    before = dataset.__getitems__(list(range(20)))
    dataset.close()
    for fd in opened:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert dataset[5] == before[5]  # reopens on demand
    dataset.close()
    assert dataset.__getitems__(list(range(20))) == before


def _tar_with(path, names):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))


@pytest.mark.parametrize("bad", ["../escape.txt", "/etc/passwd.txt", "a/../../b.txt"])
def test_hostile_member_names_are_refused_naming_shard_and_offset(tmp_path, bad):
    _tar_with(tmp_path / "h.tar", ["ok.txt", bad])
    with pytest.raises(ShardError, match=r"h\.tar: member .* at offset \d+ has an absolute or '\.\.' path"):
        IndexedTarDataset(tmp_path / "h.tar")


def test_compressed_tar_is_refused_with_a_clear_error(tmp_path):
    import gzip

    _tar_with(tmp_path / "plain.tar", ["a.txt"])
    (tmp_path / "c.tar").write_bytes(gzip.compress((tmp_path / "plain.tar").read_bytes()))
    with pytest.raises(ShardError, match=r"c\.tar: a gzip-compressed tar; random access needs an uncompressed tar"):
        IndexedTarDataset(tmp_path / "c.tar")


def _resident_bytes(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.skipif(shutil.which("fincore") is None or not hasattr(os, "posix_fadvise"), reason="needs fincore and posix_fadvise")
def test_read_ahead_brings_the_whole_shard_into_the_page_cache(tmp_path):
    import time

    from packer import BuildOptions, build

    src = tmp_path / "src"
    src.mkdir()
    for i in range(400):  # 32 MB: over the 8 MiB one WILLNEED hint covers
        (src / f"{i:04d}.bin").write_bytes(os.urandom(80000))
    build(src, tmp_path / "ds", BuildOptions(quiet=True, workers=1, num_shards=1))
    shard = tmp_path / "ds" / "shard-000000.tar"
    size = shard.stat().st_size
    _evict(shard)
    if _resident_bytes(shard) > size // 10:
        pytest.skip("this file system keeps the shard cached after POSIX_FADV_DONTNEED")

    IndexedTarDataset(tmp_path / "ds", read_ahead=False)[0]  # control: a plain read brings in little
    time.sleep(0.3)
    assert _resident_bytes(shard) < size // 2

    for setting in (True, "auto"):  # a 32 MB dataset is far under half of any test machine's memory
        _evict(shard)
        dataset = IndexedTarDataset(tmp_path / "ds", read_ahead=setting)
        assert pickle.loads(pickle.dumps(dataset)).read_ahead == setting
        dataset[0]
        deadline = time.monotonic() + 20
        while _resident_bytes(shard) < size * 95 // 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _resident_bytes(shard) >= size * 95 // 100, setting


def test_read_ahead_auto_wants_the_shards_to_fit_in_half_of_available_memory(built):
    from loaders.shardfiles import available_memory, read_ahead_wanted

    gb = 10**9
    assert read_ahead_wanted("auto", 4 * gb, 8 * gb)
    assert not read_ahead_wanted("auto", 4 * gb + 1, 8 * gb)
    assert not read_ahead_wanted("auto", 1, None)  # unknown memory: off
    assert read_ahead_wanted(True, 100 * gb, 1) and not read_ahead_wanted(False, 1, 100 * gb)
    assert available_memory() > 0
    with pytest.raises(ValueError, match="read_ahead must be True, False or 'auto'"):
        IndexedTarDataset(built, read_ahead="yes")


def test_a_missing_source_path_says_what_a_source_can_be(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file or directory \(pass a dataset directory made by"):
        IndexedTarDataset(tmp_path / "nope")
    from loaders import StreamingTarDataset

    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        StreamingTarDataset(str(tmp_path / "nope.tar"))


def test_a_shard_that_failed_once_names_each_later_sample(mixed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mixed, copy)
    dataset = IndexedTarDataset(copy)
    (copy / dataset.index.shard_paths[1].rsplit("/", 1)[-1]).unlink()
    first, second = np.flatnonzero(np.asarray(dataset.index.sample_shard) == 1)[:2].tolist()
    with pytest.raises(ShardError, match=rf"shard missing \(needed for sample {first}\)$") as one:
        dataset[first]
    with pytest.raises(ShardError, match=rf"shard missing \(needed for sample {second}\)$") as two:
        dataset[second]
    assert one.value.shard == two.value.shard == 1 and one.value.whole_shard and two.value.whole_shard


def test_a_glob_of_a_packed_datasets_own_shards_uses_its_index(mixed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mixed, copy)
    by_directory = IndexedTarDataset(copy)
    by_glob = IndexedTarDataset(str(copy / "*.tar"), verify=True)  # hashes come from the packed index
    assert len(by_glob) == len(by_directory)
    assert [by_glob[i] for i in range(len(by_glob))] == [by_directory[i] for i in range(len(by_directory))]
    assert by_glob.index.shard_paths == sorted(str(p) for p in copy.glob("*.tar"))  # as the caller named them
    assert not list(copy.glob("*.pkidx*"))  # no tar index written into the dataset



def test_some_of_a_packed_datasets_shards_in_any_order_use_its_index(mixed, tmp_path):
    """A subset of the shards, in the caller's order (even twice), gives the
    same samples as reading those tars as plain tars, without reading a
    header or writing a cache file into the dataset."""
    copy = tmp_path / "copy"
    shutil.copytree(mixed, copy)
    tars = sorted(copy.glob("*.tar"))
    chosen = [tars[3], tars[1], tars[3]]
    subset = IndexedTarDataset([str(p) for p in chosen], verify=True)
    assert not list(copy.glob("*.pkidx*"))
    assert subset.index.shard_paths == [str(p) for p in chosen]
    plain = tmp_path / "plain"
    plain.mkdir()
    for k, p in enumerate(chosen):  # the same tars outside the dataset: indexed from their headers
        shutil.copy(p, plain / f"{k}-{p.name}")
    as_tars = IndexedTarDataset(sorted(str(p) for p in plain.glob("*.tar")))
    assert len(subset) == len(as_tars) == 2 * len(PackedIndex(copy).shard_samples(3)) + len(PackedIndex(copy).shard_samples(1))

    def without_url(sample):
        return {k: v for k, v in sample.items() if k != "__url__"}

    assert [without_url(subset[i]) for i in range(len(subset))] == [without_url(as_tars[i]) for i in range(len(as_tars))]
    assert subset.__getitems__(list(range(len(subset)))) == [subset[i] for i in range(len(subset))]
    assert [subset[i]["__url__"] for i in (0, len(subset) - 1)] == [str(tars[3])] * 2


def test_extensions_read_lowercased_from_the_index_as_from_the_tars(tmp_path):
    """Readers lowercase extensions (docs/format.md); so do both loaders on a
    packed dataset, whether named by directory or by its tars."""
    import webdataset as wds

    from loaders import StreamingTarDataset
    from packer import BuildOptions, build

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.JPG").write_bytes(b"jpeg bytes")
    (src / "a" / "x.json").write_bytes(b"{}")
    (src / "a" / "z.Png").write_bytes(b"png bytes")
    build(src, tmp_path / "ds", BuildOptions(quiet=True, workers=1, shuffle=False))
    expected = [{"__key__": "a/x", "jpg": b"jpeg bytes", "json": b"{}"}, {"__key__": "a/z", "png": b"png bytes"}]

    def plain(sample):
        return {k: v for k, v in sample.items() if k not in ("__url__", "__index__", "__local_path__")}

    assert [plain(IndexedTarDataset(tmp_path / "ds")[i]) for i in range(2)] == expected
    assert [plain(IndexedTarDataset(str(tmp_path / "ds" / "*.tar"))[i]) for i in range(2)] == expected
    assert [plain(s) for s in StreamingTarDataset(tmp_path / "ds", shuffle=False)] == expected
    assert [plain(s) for s in wds.WebDataset(str(tmp_path / "ds" / "shard-000000.tar"), shardshuffle=False)] == expected


def test_a_glob_of_a_packed_dataset_with_a_replaced_shard_reads_the_tars(mixed, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mixed, copy)
    replaced = sorted(copy.glob("*.tar"))[1]
    with tarfile.open(replaced, "w") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"new/{i}.bin")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"data"))
    with pytest.raises(ShardError, match="changed since it was indexed"):  # the directory's index is stale
        dataset = IndexedTarDataset(copy)
        [dataset[i] for i in range(len(dataset))]
    by_glob = IndexedTarDataset(str(copy / "*.tar"))  # the tars as they are now
    keys = [by_glob[i]["__key__"] for i in range(len(by_glob))]
    assert [k for k in keys if k.startswith("new/")] == ["new/0", "new/1", "new/2"]
