"""The epoch order and the rank/worker split: pure arithmetic, checked exactly."""

import itertools

import numpy as np
import pytest

from loaders.order import EpochOrder, shard_chunks
from loaders.split import Deal, wrap


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


def test_positions_map_to_the_same_samples_one_by_one_or_in_ranges():
    order = EpochOrder.build(np.array([97, 203, 1, 64]), seed=11, epoch=2, chunk_samples=7, window_samples=30)
    whole = order.samples()
    positions = np.random.default_rng(3).permutation(len(whole))[:150]
    assert np.array_equal(order.at(positions), whole[positions])
    assert [list(w) for w in order.windows_between(25, 95)][0][0] == 25
    with pytest.raises(ValueError):
        order.at(np.array([len(whole)]))


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


SHAPES = [(n, w, u, d) for n, w, u, d in itertools.product([0, 1, 2, 7, 10, 12, 100, 1000], [1, 2, 3, 8], [1, 4, 16], [False, True])]


def dealt(deal, rank, workers):
    """Positions each worker of ``rank`` reads, in yield order, over the whole deal."""
    return [deal.worker_positions(deal.start, deal.end, rank, w, workers).tolist() for w in range(workers)]


@pytest.mark.parametrize("n, world, unit, drop_last", SHAPES)
def test_ranks_get_equal_shares_that_cover_the_epoch_under_the_policy(n, world, unit, drop_last):
    deal = Deal(n, world, unit, drop_last)
    shares = [sum(dealt(deal, r, 1), []) for r in range(world)]
    assert all(len(s) == deal.rank_share for s in shares)
    assert sorted(p for s in shares for p in s) == list(range(deal.start, deal.end))
    counts = np.bincount([p % n for s in shares for p in s], minlength=n) if n else np.zeros(0, int)
    if drop_last:
        assert counts.max(initial=0) <= 1 and n - counts.sum() <= world - 1
    else:
        assert counts.min(initial=1) >= 1 and counts.sum() - n <= world - 1


@pytest.mark.parametrize("n, world, unit, drop_last", SHAPES)
def test_global_batches_are_consecutive_positions_whatever_the_shape(n, world, unit, drop_last):
    """Rank r's batch k is slice r of global batch k: concatenating the ranks'
    batches step by step gives positions in order."""
    deal = Deal(n, world, unit, drop_last)
    spans = [deal.batch_spans(r) for r in range(world)]
    assert {len(s) for s in spans} == {deal.rank_batches()}
    sequence = [p for k in range(deal.rank_batches()) for r in range(world) for p in range(*spans[r][k])]
    assert sequence == list(range(deal.start, deal.end))
    # and workers take the rank's batches in turn, as a DataLoader hands them out
    for workers in (1, 2, 3):
        per_worker = dealt(deal, world - 1, workers)
        batches = [[p for p in range(*span)] for span in spans[world - 1]]
        assert per_worker == [sum(batches[w::workers], []) for w in range(workers)]


@pytest.mark.parametrize("start", [0, 8, 24, 37, 64])
def test_resuming_deals_the_rest_of_the_epoch(start):
    deal = Deal(64, 3, 4, False, start=start)
    got = sorted(p for r in range(3) for p in sum(dealt(deal, r, 2), []))
    assert got[: 64 - start] == list(range(start, 64))
    assert len(got) - (64 - start) <= 2


def test_position_after_counts_whole_global_batches():
    deal = Deal(100, 3, 8)
    assert deal.position_after(0) == 0
    assert deal.position_after(16) == 48
    assert deal.position_after(deal.rank_share) == deal.end >= 100
    with pytest.raises(ValueError, match="whole number of batches"):
        deal.position_after(5)
    assert Deal(100, 3, 8, start=48).position_after(8) == 72


def test_wrap_continues_from_the_start():
    assert wrap(8, 13, 10) == [(8, 10), (0, 3)]
    assert wrap(0, 7, 3) == [(0, 3), (0, 3), (0, 1)]
    assert wrap(4, 4, 10) == []
    with pytest.raises(ValueError):
        wrap(0, 1, 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        Deal(10, 3).worker_positions(0, 10, 3, 0, 1)
    with pytest.raises(ValueError):
        Deal(10, 3).worker_positions(0, 10, 0, 2, 2)
    with pytest.raises(ValueError):
        Deal(10, 0)
    with pytest.raises(ValueError):
        Deal(10, 2, start=11)
    with pytest.raises(ValueError):
        shard_chunks(np.array([3]), 0)
