"""StreamingTarDataset on real shards, DataLoader workers and torchrun ranks."""

import io
import json
import pickle
import tarfile
import warnings
from collections import Counter

import numpy as np
import pytest
import webdataset as wds
from torch.utils.data import DataLoader

from loaders import IndexedTarDataset, ShardError, StreamingTarDataset
from packer.build import BuildOptions, build

from conftest import REPO, run_torchrun


@pytest.fixture(scope="module")
def one_shard(image_tree, tmp_path_factory):
    """The 3,000 samples of ``image_tree`` in a single shard."""
    dst = tmp_path_factory.mktemp("one") / "shards"
    build(image_tree, dst, BuildOptions(num_shards=1, workers=1, quiet=True))
    return dst


def indices(stream):
    return [sample["__index__"] for sample in stream]


def test_one_epoch_yields_every_sample_once_with_the_indexed_bytes(built):
    stream = StreamingTarDataset(built)
    reference = IndexedTarDataset(built)
    samples = list(stream)
    assert len(samples) == len(stream) == len(reference) == 3000
    assert sorted(indices(samples)) == list(range(3000))
    for sample in samples[::37]:
        assert sample == reference[sample["__index__"]]


def test_epochs_differ_and_an_epoch_repeats_exactly(built):
    stream = StreamingTarDataset(built, seed=5)
    first, second = indices(stream), indices(stream)  # the epoch moves on by itself
    assert first != second and sorted(first) == sorted(second)
    stream.set_epoch(0)
    assert indices(stream) == first
    assert indices(StreamingTarDataset(built, seed=5)) == first
    assert indices(StreamingTarDataset(built, seed=6)) != first


def test_unshuffled_stream_is_in_stored_order(built):
    assert indices(StreamingTarDataset(built, shuffle=False)) == list(range(3000))


def test_shuffled_stream_keeps_locality_within_windows(built):
    stream = StreamingTarDataset(built, shuffle_buffer=256)
    order = indices(stream)
    shard_of = IndexedTarDataset(built).index.sample_shard
    # within a window of ~256 samples only a handful of shards are touched
    touched = [len(set(shard_of[order[i : i + 256]].tolist())) for i in range(0, 3000 - 256, 256)]
    assert max(touched) <= 9 and np.mean(touched) > 2


@pytest.mark.parametrize("world", [2, 3, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_equal_shares_of_one_shard(one_shard, world, drop_last):
    shares = [indices(StreamingTarDataset(one_shard, rank=r, world_size=world, drop_last=drop_last)) for r in range(world)]
    lengths = {len(StreamingTarDataset(one_shard, rank=r, world_size=world, drop_last=drop_last)) for r in range(world)}
    assert {len(s) for s in shares} == lengths and len(lengths) == 1
    counts = Counter(i for share in shares for i in share)
    if drop_last:
        assert max(counts.values()) == 1 and 3000 - len(counts) <= world - 1
    else:
        assert set(counts) == set(range(3000)) and sum(counts.values()) - 3000 <= world - 1


def test_rank_comes_from_the_environment(built, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    stream = StreamingTarDataset(built)
    assert len(stream) == 750
    assert indices(stream) == indices(StreamingTarDataset(built, rank=1, world_size=4))


@pytest.mark.parametrize("workers", [0, 2, 3])
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("batch_size, partial", [(16, True), (7, False)])
def test_batched_pipeline_counts_batches_and_workers_share_the_rank(built, workers, batch_size, partial):
    stream = StreamingTarDataset(built, rank=0, world_size=3, transform=lambda s: s["__index__"])
    batched = stream.batched(batch_size, collation_fn=np.array, partial=partial)
    loader = DataLoader(batched, batch_size=None, num_workers=workers)
    batches = [b.tolist() for b in loader]
    expected = 1000 // batch_size if not partial else -(-1000 // batch_size)
    assert len(batches) == len(batched) == len(loader) == expected
    assert all(len(b) == batch_size for b in batches[:-1])
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat) == (1000 if partial else expected * batch_size)
    # workers take the rank's batches in turn: the same stream as without workers
    single = StreamingTarDataset(built, rank=0, world_size=3, transform=lambda s: s["__index__"])
    assert flat == [i for b in single.batched(batch_size, collation_fn=np.array, partial=partial) for i in b.tolist()]


def test_webdataset_stages_chain(built):
    stream = StreamingTarDataset(built, decode="rgb").to_tuple("jpg", "json").map(lambda t: (t[0].size, t[1]["label"]))
    first = next(iter(stream))
    assert first[0] == (24, 24) and isinstance(first[1], int)
    assert len(stream) == 3000


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_more_workers_than_samples(tmp_path):
    with tarfile.open(tmp_path / "tiny.tar", "w") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"s{i}.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"abc"[i : i + 1]))
    stream = StreamingTarDataset(tmp_path / "tiny.tar", rank=1, world_size=2, transform=lambda s: s["txt"])
    got = [x for x in DataLoader(stream, batch_size=None, num_workers=3)]
    assert len(got) == len(stream) == 2


def test_tars_written_by_other_tools_stream_through_their_header_index(tmp_path):
    with tarfile.open(tmp_path / "a.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(50):
            for ext, data in (("txt", f"text {i}".encode()), ("cls", str(i % 3).encode())):
                info = tarfile.TarInfo(f"dir/{'long' * 30}_{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with wds.TarWriter(str(tmp_path / "b.tar")) as sink:
        for i in range(30):
            sink.write({"__key__": f"w{i:03d}", "txt": f"wds {i}", "cls": i % 3})
    stream = StreamingTarDataset(str(tmp_path / "{a,b}.tar"), decode="default")
    samples = list(stream)
    assert len(samples) == len(stream) == 80
    by_key = {s["__key__"]: s for s in samples}
    assert by_key[f"dir/{'long' * 30}_007"]["txt"] == "text 7" and by_key["w012"]["cls"] == 0


def test_shards_without_an_index_stream_whole_shards_with_a_warning(built):
    urls = [f"pipe:cat {p}" for p in sorted(map(str, built.glob("*.tar")))]
    with pytest.warns(UserWarning, match="without an index"):
        stream = StreamingTarDataset(urls, rank=0, world_size=1)
    keys = [s["__key__"] for s in stream]
    assert len(keys) == len(set(keys)) == 3000
    with pytest.raises(TypeError, match="unknown"):
        len(stream)
    with pytest.warns(UserWarning):
        halves = [[s["__key__"] for s in StreamingTarDataset(urls, rank=r, world_size=2)] for r in range(2)]
    assert not set(halves[0]) & set(halves[1]) and len(halves[0]) + len(halves[1]) == 3000


def test_pickled_dataset_carries_no_index_and_streams_the_same(built):
    stream = StreamingTarDataset(built, seed=2)
    data = pickle.dumps(stream)
    assert len(data) < 10_000
    assert indices(pickle.loads(data)) == indices(stream)


def test_truncated_shard_is_named_and_handler_can_skip_it(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    victim = sorted(copy.glob("*.tar"))[2]
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size - 5000)
    with pytest.raises(ShardError, match=victim.name):
        list(StreamingTarDataset(copy, shuffle=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = indices(StreamingTarDataset(copy, shuffle=False, handler=wds.warn_and_continue))
    assert 2000 < len(got) < 3000 and len(set(got)) == len(got)
    assert any(victim.name in str(w.message) for w in caught)


def good_and_truncated_tars(root, samples):
    """Two foreign tars of ``samples`` 700-byte samples; the second is cut
    inside its second member's data, so it cannot be indexed."""
    for name in ("good", "bad"):
        with tarfile.open(root / f"{name}.tar", "w") as tar:
            for i in range(samples):
                info = tarfile.TarInfo(f"{name}/{i:02d}.bin")
                info.size = 700
                tar.addfile(info, io.BytesIO(bytes([i]) * 700))
    bad = root / "bad.tar"
    bad.write_bytes(bad.read_bytes()[:2500])
    return [str(root / "good.tar"), str(bad)]


def test_a_foreign_tar_that_cannot_be_indexed_is_left_out_by_a_skipping_handler(tmp_path):
    from loaders import IndexedTarDataset

    tars = good_and_truncated_tars(tmp_path, 10)
    with pytest.raises(ShardError, match="bad.tar"):
        StreamingTarDataset(tars)
    with pytest.raises(ShardError, match="bad.tar"):
        IndexedTarDataset(tars)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = StreamingTarDataset(tars, shuffle=False, handler=wds.warn_and_continue)
    assert any("bad.tar" in str(w.message) for w in caught)
    assert len(dataset) == 10
    assert [s["__key__"] for s in dataset] == [f"good/{i:02d}" for i in range(10)]
    with pytest.raises(ShardError, match="bad.tar"):
        StreamingTarDataset(tars, handler=wds.ignore_and_stop)  # "stop" means nothing before the first sample


def skip_only_where_the_dataset_is_built(exc):
    """A handler that fails the test if a DataLoader worker asks it again."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is not None:
        raise AssertionError(f"a worker asked the handler again about: {exc}")
    return True


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_skip_the_tars_the_handler_left_out_without_asking_again(tmp_path, context):
    good, bad = good_and_truncated_tars(tmp_path, 12)
    dataset = StreamingTarDataset([good, bad], shuffle=False, handler=skip_only_where_the_dataset_is_built)
    assert dataset._source.skipped_tars == {bad}
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context=context)
    assert sorted(s["__key__"] for s in loader) == [f"good/{i:02d}" for i in range(12)]


def test_bad_arguments_are_refused(built, tmp_path):
    with pytest.raises(ValueError, match="shuffle_buffer"):
        StreamingTarDataset(built, shuffle_buffer=0)
    with pytest.raises(ValueError, match="index.json"):
        StreamingTarDataset(tmp_path)
    (tmp_path / ".plan").mkdir()  # an interrupted build: not its partial tars, but --resume
    with pytest.raises(ValueError, match=r"its build did not finish .*--resume"):
        IndexedTarDataset(tmp_path)
    with pytest.raises(ValueError, match="already batched"):
        StreamingTarDataset(built).batched(4).batched(2)


@pytest.mark.parametrize("nproc", [2, 3])
def test_torchrun_ranks_yield_equal_counts_and_never_hang(built, one_shard, tmp_path, nproc):
    out = tmp_path / "ranks.json"
    result = run_torchrun(
        REPO / "tests" / "helpers" / "ddp_streaming.py",
        "--data", str(built), "--data", str(one_shard), "--out", str(out), nproc=nproc, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert len(ranks) == nproc
    for runs in zip(*ranks):
        config = {k: runs[0][k] for k in ("data", "workers", "drop_last")}
        drop_last = config["drop_last"]
        share = 3000 // nproc if drop_last else -(-3000 // nproc)
        for epoch in range(2):
            per_rank = [run["epochs"][epoch] for run in runs]
            assert all(len(p) == share == run["len"] for p, run in zip(per_rank, runs)), config
            assert all(run["batches"] == run["loader_len"] == -(-share // 8) for run in runs), config
            counts = Counter(i for p in per_rank for i in p)
            if drop_last:
                assert max(counts.values()) == 1 and 3000 - len(counts) <= nproc - 1, config
            else:
                assert set(counts) == set(range(3000)) and sum(counts.values()) - 3000 <= nproc - 1, config
        for run in runs:
            assert run["epochs"][0] != run["epochs"][1], config
            assert run["again"] == run["epochs"][1], config


def test_large_and_small_samples_read_alike(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    for i in range(300):
        folder = src / f"d{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        size = int(rng.choice([10, 900, 20_000, 70_000]))
        (folder / f"{i:04d}.bin").write_bytes(rng.bytes(size))
        if i % 3 == 0:
            (folder / f"{i:04d}.txt").write_bytes(rng.bytes(int(rng.integers(0, 3000))))
    dst = tmp_path / "dst"
    build(src, dst, BuildOptions(shard_size=2_000_000, workers=1, quiet=True))
    reference = IndexedTarDataset(dst)
    for shuffle_buffer in (1, 16, 300):
        samples = list(StreamingTarDataset(dst, shuffle_buffer=shuffle_buffer))
        assert sorted(indices(samples)) == list(range(300))
        assert all(s == reference[s["__index__"]] for s in samples)


@pytest.mark.parametrize("loader", ["streaming", "indexed"])
def test_torchrun_resume_with_another_shape_continues_the_single_process_order(built, tmp_path, loader):
    """2 ranks x 2 workers consume 40 global batches of 16, save the state;
    3 ranks x 1 worker (batch 8: global 24) load it and finish the epoch."""
    script = REPO / "tests" / "helpers" / "ddp_resume.py"
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    result = run_torchrun(script, "--data", str(built), "--loader", loader, "--workers", "2", "--batch-size", "8",
                          "--steps", "40", "--out", str(first), nproc=2, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(first.read_text())
    assert saved["state"]["epoch"] == 0 and saved["state"]["position"] == 40 * 16
    (tmp_path / "state.json").write_text(json.dumps(saved["state"]))
    result = run_torchrun(script, "--data", str(built), "--loader", loader, "--workers", "1", "--batch-size", "8",
                          "--state", str(tmp_path / "state.json"), "--out", str(second), nproc=3, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = json.loads(second.read_text())
    assert resumed["state"] == {**saved["state"], "epoch": 1, "position": 0}
    consumed = [i for batch in saved["global_batches"] + resumed["global_batches"] for i in batch]
    single = [s["__index__"] for s in StreamingTarDataset(built, seed=9, rank=0, world_size=1)]
    # the job consumed the single-process order, then (pad) up to world-1 from its start
    assert consumed[:3000] == single
    assert consumed[3000:] == single[: len(consumed) - 3000] and len(consumed) - 3000 <= 2
    assert set(resumed["lens"]) == {len(resumed["global_batches"])}
    assert set(saved["lens"]) == {-(-1500 // 8)}


def _loader(kind, data, rank, world, workers, batch, seed=9, drop_last=False):
    from loaders import ResumableLoader, ShardAwareSampler

    if kind == "streaming":
        dataset = StreamingTarDataset(data, seed=seed, rank=rank, world_size=world, drop_last=drop_last, transform=_index_of)
        return ResumableLoader(dataset.batched(batch, collation_fn=np.array), batch_size=None, num_workers=workers)
    dataset = IndexedTarDataset(data, transform=_index_of)
    sampler = ShardAwareSampler(dataset, seed=seed, rank=rank, world_size=world, drop_last=drop_last, batch_size=batch)
    return ResumableLoader(dataset, sampler=sampler, batch_size=batch, num_workers=workers, collate_fn=np.array)


def _index_of(sample):
    return sample["__index__"]


def _consume(kind, data, world, workers, batch, steps=None, state=None, drop_last=False):
    """Simulated ranks (explicit rank/world) consume ``steps`` global batches
    (None: the rest of the epoch); returns (global batches, states)."""
    per_rank, states = [], []
    for rank in range(world):
        loader = _loader(kind, data, rank, world, workers, batch, drop_last=drop_last)
        if state is not None:
            loader.load_state_dict(state)
        got = []
        for b in loader:
            got.append(b.tolist())
            if len(got) == steps:
                break
        per_rank.append(got)
        states.append(loader.state_dict())
    assert len({len(p) for p in per_rank}) == 1 and all(s == states[0] for s in states)
    return [sum((p[k] for p in per_rank), []) for k in range(len(per_rank[0]))], states[0]


@pytest.mark.parametrize("kind", ["streaming", "indexed"])
@pytest.mark.parametrize("before, after", [((2, 2, 8), (3, 1, 8)), ((1, 0, 32), (4, 2, 4)), ((3, 1, 5), (1, 0, 7)), ((5, 2, 3), (2, 0, 16))])
def test_resume_in_another_shape_consumes_the_rest_of_the_epoch_once(built, kind, before, after):
    single = [s["__index__"] for s in StreamingTarDataset(built, seed=9, rank=0, world_size=1)]
    first, state = _consume(kind, built, *before, steps=30)
    assert state["position"] == 30 * before[0] * before[2]
    rest, final = _consume(kind, built, *after, state=state)
    consumed = [i for b in first + rest for i in b]
    assert consumed[:3000] == single and consumed[3000:] == single[: len(consumed) - 3000]
    assert len(consumed) - 3000 <= after[0] - 1
    assert (final["epoch"], final["position"]) == (1, 0)


def test_resume_with_drop_last_misses_at_most_world_minus_one(built):
    single = [s["__index__"] for s in StreamingTarDataset(built, seed=9, rank=0, world_size=1)]
    first, state = _consume("streaming", built, 2, 0, 8, steps=7, drop_last=True)
    rest, _ = _consume("streaming", built, 7, 0, 8, state=state, drop_last=True)
    consumed = [i for b in first + rest for i in b]
    assert consumed == single[: len(consumed)] and 3000 - len(consumed) <= 6


def test_dataset_counts_by_itself_without_workers(built):
    stream = StreamingTarDataset(built, seed=2).batched(10, collation_fn=np.array)
    iterator = iter(stream)
    head = [next(iterator).tolist() for _ in range(12)]
    state = stream.state_dict()
    assert (state["epoch"], state["position"]) == (0, 120)
    again = StreamingTarDataset(built, seed=2).batched(10, collation_fn=np.array)
    again.load_state_dict(state)
    assert len(again) == 288
    tail = [b.tolist() for b in again]
    whole = [b.tolist() for b in StreamingTarDataset(built, seed=2).batched(10, collation_fn=np.array)]
    assert head + tail == whole
    assert again.state_dict()["epoch"] == 1 and again.epoch == 1


def test_incompatible_states_are_refused(built, one_shard):
    from loaders import IncompatibleStateError

    state = StreamingTarDataset(built, seed=1).state_dict()
    with pytest.raises(IncompatibleStateError, match="different order .*seed: saved 1, now 2"):
        StreamingTarDataset(built, seed=2).load_state_dict(state)
    with pytest.raises(IncompatibleStateError, match="different dataset"):
        StreamingTarDataset(one_shard, seed=1).load_state_dict(state)
    with pytest.raises(IncompatibleStateError, match="not a loader state"):
        StreamingTarDataset(built, seed=1).load_state_dict({"epoch": 1})
    # the two loaders share the order, so their states are interchangeable
    from loaders import ShardAwareSampler

    sampler = ShardAwareSampler(IndexedTarDataset(built), seed=1)
    sampler.load_state_dict(state)


def test_resumable_loader_refuses_setups_it_cannot_count(built):
    from loaders import ResumableLoader

    with pytest.raises(ValueError, match="persistent"):
        ResumableLoader(StreamingTarDataset(built).batched(4), batch_size=None, num_workers=1, persistent_workers=True)
    with pytest.raises(ValueError, match="batch inside the pipeline"):
        ResumableLoader(StreamingTarDataset(built), batch_size=4, num_workers=2)
    with pytest.raises(TypeError, match="ResumableLoader needs"):
        ResumableLoader(IndexedTarDataset(built), batch_size=4)


def test_unbatched_pipeline_deals_single_samples_again(built):
    stream = StreamingTarDataset(built, shuffle=False).batched(4).unbatched()
    iterator = iter(stream)
    assert [next(iterator)["__index__"] for _ in range(3)] == [0, 1, 2]
    assert stream.state_dict()["position"] == 3 and len(stream) == 3000


def test_set_epoch_after_a_broken_off_epoch_starts_clean(built):
    from loaders import ShardAwareSampler

    stream = StreamingTarDataset(built).batched(10)
    iterator = iter(stream)
    next(iterator)
    stream.set_epoch(5)
    assert (stream.state_dict()["epoch"], stream.state_dict()["position"]) == (5, 0)
    sampler = ShardAwareSampler(IndexedTarDataset(built), rank=0, world_size=1)
    next(iter(sampler))
    sampler.set_epoch(5)
    assert (sampler.state_dict()["epoch"], sampler.state_dict()["position"]) == (5, 0)


def test_state_after_a_whole_share_with_drop_last_is_the_next_epoch(built):
    stream = StreamingTarDataset(built, rank=0, world_size=7, drop_last=True).listed(64)
    assert sum(len(b) for b in iter(stream)) == 3000 // 7
    stream.set_epoch(0)
    iterator = iter(stream)
    for _ in range(len(stream)):
        next(iterator)
    state = stream.state_dict()
    assert (state["epoch"], state["position"]) == (1, 0)


def test_malformed_states_are_refused_cleanly(built):
    from loaders import IncompatibleStateError

    good = StreamingTarDataset(built).state_dict()
    for bad in ({**good, "position": "3"}, {**good, "epoch": None}, {k: v for k, v in good.items() if k != "position"},
                {**good, "position": 3001}, {**good, "version": 99}):
        with pytest.raises(IncompatibleStateError):
            StreamingTarDataset(built).load_state_dict(bad)


def test_a_missing_shard_is_reported_once_and_stop_keeps_what_came_before(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    sorted(copy.glob("*.tar"))[1].unlink()
    calls = []

    def skip(exc):
        calls.append(exc)
        return True

    got = indices(StreamingTarDataset(copy, shuffle=False, handler=skip))
    assert len(calls) == 1 and "shard missing" in str(calls[0])
    counts = np.bincount(IndexedTarDataset(built).index.sample_shard)
    assert len(got) == 3000 - counts[1]
    stopped = indices(StreamingTarDataset(copy, shuffle=False, handler=lambda exc: False))
    assert stopped == list(range(counts[0]))  # everything before the missing shard, then stop


def test_reads_longer_than_one_pread_returns_are_completed(built, monkeypatch):
    import os as os_module

    from loaders import shardfiles

    real = os_module.pread
    monkeypatch.setattr(shardfiles.os, "pread", lambda fd, n, off: real(fd, min(n, 1000), off))
    reference = IndexedTarDataset(built)
    samples = list(StreamingTarDataset(built, shuffle=False))
    assert len(samples) == 3000 and all(s == reference[s["__index__"]] for s in samples[::50])


def test_datasets_close_their_descriptors_when_collected(built):
    import gc
    import os as os_module

    before = len(os_module.listdir("/proc/self/fd"))
    for _ in range(3):
        stream = StreamingTarDataset(built)
        list(stream)
        del stream
        gc.collect()
    assert len(os_module.listdir("/proc/self/fd")) <= before


def test_resumable_loader_refuses_double_batching(built):
    from loaders import ResumableLoader

    with pytest.raises(ValueError, match="batch_size=None"):
        ResumableLoader(StreamingTarDataset(built).batched(4), batch_size=2, num_workers=2)
