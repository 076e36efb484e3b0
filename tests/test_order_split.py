"""The epoch order and the rank/worker split: pure arithmetic, checked exactly."""

import itertools

import numpy as np
import pytest

from loaders.order import EpochOrder, shard_chunks
from loaders.split import batches_for, rank_share, rank_span, worker_span, wrap


def test_chunks_cover_each_shard_in_runs_of_consecutive_samples():
    starts, lengths = shard_chunks(np.array([5, 0, 3, 8]), 3)
    assert starts.tolist() == [0, 3, 5, 8, 11, 14]
    assert lengths.tolist() == [3, 2, 3, 3, 3, 2]


@pytest.mark.parametrize("counts, chunk, window", [
    ([100] * 7, 8, 64), ([1, 0, 250, 3], 16, 100), ([37], 5, 1), ([1000, 999], 300, 50), ([0, 0], 4, 8),
])
def test_every_epoch_is_a_permutation_made_of_windows_of_chunks(counts, chunk, window):
    n = sum(counts)
    order = EpochOrder.build(np.array(counts), seed=7, epoch=3, chunk_samples=chunk, window_samples=window)
    samples = order.samples()
    assert sorted(samples.tolist()) == list(range(n))
    for w in range(order.num_windows):
        start, stop = order.window_start[w], order.window_start[w + 1]
        inside = samples[start:stop]
        # a window is the union of its chunks, which are runs inside one shard
        lo, hi = order.window_first_chunk[w], order.window_first_chunk[w + 1]
        expected = np.concatenate([np.arange(s, s + l) for s, l in zip(order.chunk_start[lo:hi], order.chunk_len[lo:hi])])
        assert sorted(inside.tolist()) == sorted(expected.tolist())
        # and it holds about `window` samples: it starts a new one at a multiple of `window`
        assert stop - start <= window + chunk - 1 or hi - lo == 1


def test_order_depends_on_seed_and_epoch_only():
    counts = np.array([300, 200, 500])
    a = EpochOrder.build(counts, seed=1, epoch=0).samples()
    assert np.array_equal(a, EpochOrder.build(counts, seed=1, epoch=0).samples())
    assert not np.array_equal(a, EpochOrder.build(counts, seed=1, epoch=1).samples())
    assert not np.array_equal(a, EpochOrder.build(counts, seed=2, epoch=0).samples())


def test_unshuffled_order_is_the_stored_order():
    order = EpochOrder.build(np.array([10, 0, 25]), seed=5, epoch=9, shuffle=False, chunk_samples=4, window_samples=8)
    assert order.samples().tolist() == list(range(35))


def test_any_range_of_positions_equals_the_slice_of_the_whole_epoch():
    order = EpochOrder.build(np.array([97, 203, 1, 64]), seed=11, epoch=2, chunk_samples=7, window_samples=30)
    whole = order.samples()
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = sorted(rng.integers(0, len(whole) + 1, size=2).tolist())
        pieces = list(order.pieces(a, b))
        assert np.array_equal(np.concatenate(pieces) if pieces else np.zeros(0, int), whole[a:b])
        assert all(len(p) <= max(np.diff(order.window_start)) for p in pieces)
    with pytest.raises(ValueError):
        list(order.pieces(0, len(whole) + 1))


def test_a_window_mixes_chunks_of_several_shards():
    order = EpochOrder.build(np.array([1000] * 20), seed=0, epoch=0, chunk_samples=128, window_samples=1024)
    first_window = order.window_samples(0)
    assert len(np.unique(first_window // 1000)) >= 4
    assert len(first_window) >= 1024


@pytest.mark.parametrize("n, world, drop_last", [
    (n, w, d) for n, w, d in itertools.product([0, 1, 2, 7, 10, 12, 1000], [1, 2, 3, 8], [False, True])
])
def test_rank_spans_are_equal_and_cover_the_epoch_under_the_policy(n, world, drop_last):
    share = rank_share(n, world, drop_last)
    spans = [rank_span(n, r, world, drop_last) for r in range(world)]
    assert all(stop - start == share for start, stop in spans)
    positions = [p for start, stop in spans for a, b in (wrap(start, stop, n) if n else []) for p in range(a, b)]
    counts = np.bincount(positions, minlength=n) if n else np.zeros(0, int)
    if drop_last:
        assert counts.max(initial=0) <= 1 and n - counts.sum() <= world - 1
    else:
        assert counts.min(initial=1) >= 1 and counts.sum() - n <= world - 1


@pytest.mark.parametrize("length, workers, unit", list(itertools.product([0, 1, 5, 17, 64, 100], [1, 2, 3, 4, 8], [1, 3, 16])))
def test_worker_spans_partition_a_rank_span_in_whole_units(length, workers, unit):
    start = 1000
    spans = [worker_span(start, start + length, w, workers, unit) for w in range(workers)]
    assert spans[0][0] == start and spans[-1][1] == start + length
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # only the span that holds the end may have a partial unit
    assert all((stop - begin) % unit == 0 for begin, stop in spans if stop != start + length)
    units = [-(-(stop - begin) // unit) for begin, stop in spans]
    assert max(units) - min(units) <= 1
    assert sum(batches_for(stop - begin, unit, True) for begin, stop in spans) == batches_for(length, unit, True)


def test_wrap_continues_from_the_start():
    assert wrap(8, 13, 10) == [(8, 10), (0, 3)]
    assert wrap(0, 7, 3) == [(0, 3), (0, 3), (0, 1)]
    assert wrap(4, 4, 10) == []
    with pytest.raises(ValueError):
        wrap(0, 1, 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        rank_span(10, 3, 3, False)
    with pytest.raises(ValueError):
        worker_span(0, 10, 2, 2)
    with pytest.raises(ValueError):
        shard_chunks(np.array([3]), 0)
