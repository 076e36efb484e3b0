"""Pure planning: balance, determinism, oversized samples, layout arithmetic."""

import numpy as np
import pytest

from packer.layout import compute_layout
from packer.plan import ARCHIVE_TRAILER, assign_balanced, key_hashes, plan_shards, shuffle_order, split_contiguous
from packer.table import SampleTable


def shard_ratio(sizes, plan):
    b = plan.shard_bytes(sizes)
    return b.max() / b.min()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dist", ["uniform", "lognormal", "bimodal"])
def test_balance_within_ten_percent_at_fifty_samples_per_shard(seed, dist):
    rng = np.random.default_rng(seed)
    n = 20_000
    if dist == "uniform":
        sizes = rng.integers(1_536, 60_000, n)
    elif dist == "lognormal":
        sizes = np.exp(rng.normal(9.5, 0.7, n)).astype(np.int64) + 1024
    else:
        sizes = np.where(rng.random(n) < 0.9, 2_048, 40_960)
    sizes = sizes.astype(np.uint64)
    plan = plan_shards(sizes, rng.permutation(n), num_shards=n // 50)  # a mean of 50 samples a shard
    assert np.diff(plan.bounds).mean() == 50
    assert shard_ratio(sizes, plan) <= 1.10


def test_every_sample_exactly_once_and_shards_non_empty():
    sizes = np.arange(1, 1001, dtype=np.uint64) * 512
    order = np.random.default_rng(0).permutation(1000)
    for num_shards in (1, 2, 7, 999, 1000):
        plan = plan_shards(sizes, order, num_shards=num_shards)
        assert plan.num_shards == num_shards
        assert sorted(plan.order.tolist()) == list(range(1000))
        assert (np.diff(plan.bounds) >= 1).all()


def test_assign_never_empty_even_with_a_giant():
    shard_of = assign_balanced(np.array([10**9, 1, 1, 1, 1], dtype=np.uint64), 4)
    assert sorted(set(shard_of.tolist())) == [0, 1, 2, 3]
    assert (shard_of == shard_of[0]).sum() == 1  # the giant is alone


def test_too_many_shards_is_an_error():
    with pytest.raises(ValueError, match="cannot make 4 non-empty shards from 3 samples"):
        assign_balanced(np.ones(3, dtype=np.uint64), 4)


def test_within_a_shard_the_shuffled_order_is_kept():
    rng = np.random.default_rng(3)
    sizes = rng.integers(1000, 9000, 500).astype(np.uint64)
    order = rng.permutation(500)
    plan = plan_shards(sizes, order, num_shards=9)
    rank = np.empty(500, dtype=np.int64)
    rank[order] = np.arange(500)
    for j in range(9):
        ranks = rank[plan.order[plan.bounds[j] : plan.bounds[j + 1]]]
        assert (np.diff(ranks) > 0).all()


def test_oversized_sample_gets_its_own_shard_last():
    sizes = np.full(100, 10_000, dtype=np.uint64)
    sizes[42] = 5_000_000
    plan = plan_shards(sizes, np.arange(100), shard_size=200_000)
    assert plan.oversized == [plan.num_shards - 1]
    assert plan.order[plan.bounds[-2] :].tolist() == [42]
    shard_bytes = plan.shard_bytes(sizes)
    assert shard_bytes[-1] == 5_000_000 + ARCHIVE_TRAILER
    assert (shard_bytes[:-1] <= 200_000 * 1.05).all()


def test_shard_size_counts_the_end_of_archive_blocks():
    sizes = np.full(10, 1024, dtype=np.uint64)
    plan = plan_shards(sizes, np.arange(10), shard_size=10 * 1024 + ARCHIVE_TRAILER)
    assert plan.num_shards == 1
    plan = plan_shards(sizes, np.arange(10), shard_size=10 * 1024 + ARCHIVE_TRAILER - 1)
    assert plan.num_shards == 2


def keys_of(names):
    blob = "".join(names).encode()
    offsets = np.zeros(len(names) + 1, dtype=np.uint64)
    np.cumsum([len(n.encode()) for n in names], out=offsets[1:])
    return np.frombuffer(blob, dtype=np.uint8), offsets


def test_shuffle_is_fixed_by_seed_and_keys():
    names = [f"class_{i % 3}/{i:05d}" for i in range(1000)]
    keys, offsets = keys_of(names)
    a = shuffle_order(keys, offsets, 0)
    assert a.tolist() == shuffle_order(keys, offsets, 0).tolist()
    assert a.tolist() != shuffle_order(keys, offsets, 1).tolist()
    assert sorted(a.tolist()) == list(range(1000))
    # a class-sorted tree is mixed: the first 100 hold all three classes
    assert {names[i].split("/")[0] for i in a[:100]} == {"class_0", "class_1", "class_2"}



KNOWN_HASHES_SEED0 = [996580060897260808, 17665956581633026203, 7637573378263665, 11175671232199433362]


def reference_key_hash(key: bytes, seed: int) -> int:
    """Byte-at-a-time FNV-1a + SplitMix64, written plainly, to check the vectorized one."""
    mask = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    state = 0xCBF29CE484222325 ^ mix(seed & mask)
    for byte in key:
        state = ((state ^ byte) * 0x100000001B3) & mask
    return mix(state)


def test_key_hashes_match_the_plain_definition():
    rng = np.random.default_rng(11)
    names = ["".join(chr(c) for c in rng.integers(32, 0x3000, rng.integers(0, 30))) for _ in range(300)]
    keys, offsets = keys_of(names)
    for seed in (0, 1, -5, 2**70):
        assert key_hashes(keys, offsets, seed).tolist() == [reference_key_hash(n.encode(), seed) for n in names]


def test_key_hashes_are_pinned():
    """Builds must reproduce across versions: these values may never change."""
    keys, offsets = keys_of(["abc", "", "class_1/00042", "ü" * 40])
    assert key_hashes(keys, offsets, 0).tolist() == KNOWN_HASHES_SEED0
    assert key_hashes(keys, offsets, 0).tolist() != key_hashes(keys, offsets, 1).tolist()


def test_shuffle_adding_a_sample_keeps_the_relative_order_of_the_rest():
    names = [f"{i:05d}" for i in range(500)]
    before = [names[i] for i in shuffle_order(*keys_of(names), 7)]
    after = [n for n in ([names + ["new"]][0][i] for i in shuffle_order(*keys_of(names + ["new"]), 7)) if n != "new"]
    assert before == after


def table_from(sizes_per_sample, header=512):
    counts = [len(s) for s in sizes_per_sample]
    flat = [x for s in sizes_per_sample for x in s]
    sample_members = np.zeros(len(counts) + 1, dtype=np.uint64)
    np.cumsum(counts, out=sample_members[1:])
    keys, key_offsets = keys_of([f"k{i}" for i in range(len(counts))])
    return SampleTable(
        keys=keys,
        key_offsets=key_offsets,
        sample_members=sample_members,
        member_ext=np.zeros(len(flat), dtype=np.uint16),
        member_size=np.array(flat, dtype=np.uint64),
        member_header_size=np.full(len(flat), header, dtype=np.uint32),
        member_mtime_ns=np.zeros(len(flat), dtype=np.int64),
        extensions=["bin"],
    )


def test_layout_offsets_by_hand():
    table = table_from([[1, 600], [0], [512, 513]])
    layout = compute_layout(table, np.array([0, 2, 3]))
    # shard 0: k0.bin(1) -> header 0, data 512..1024; k0.bin(600) -> header 1024, data 1536..2560 (pad 1024)
    #          k1.bin(0) -> header 2560, data 3072
    assert layout.member_offset.tolist() == [512, 1536, 3072, 512, 1536]
    assert layout.sample_offset.tolist() == [0, 2560, 0]
    assert layout.sample_shard.tolist() == [0, 0, 1]
    assert layout.shard_bytes.tolist() == [3072 + 1024, 512 + 512 + 512 + 1024 + 1024]


def test_keep_order_makes_contiguous_runs_in_order():
    rng = np.random.default_rng(5)
    sizes = rng.integers(1000, 5000, 3000).astype(np.uint64)
    order = np.arange(3000)
    plan = plan_shards(sizes, order, shard_size=100_000, keep_order=True)
    assert plan.order.tolist() == list(range(3000))
    assert shard_ratio(sizes, plan) <= 1.15


def test_split_contiguous_never_empty_even_with_a_giant():
    bounds = split_contiguous(np.array([10**9, 1, 1, 1, 1], dtype=np.uint64), 4)
    assert bounds[0] == 0 and bounds[-1] == 5 and (np.diff(bounds) >= 1).all()


def test_shard_size_is_an_upper_bound_when_samples_fit():
    sizes = np.full(3, 600_000, dtype=np.uint64)
    plan = plan_shards(sizes, np.arange(3), shard_size=1_000_000)
    assert plan.num_shards == 3 and plan.shard_bytes(sizes).max() <= 1_000_000
    rng = np.random.default_rng(2)
    for _ in range(20):
        sizes = rng.integers(1_000, 300_000, rng.integers(5, 400)).astype(np.uint64)
        for keep in (False, True):
            plan = plan_shards(sizes, rng.permutation(len(sizes)), shard_size=1_000_000, keep_order=keep)
            assert plan.shard_bytes(sizes).max() <= 1_000_000


def test_keep_order_leaves_oversized_samples_in_place():
    sizes = np.full(50, 1_000, dtype=np.uint64)
    sizes[[0, 20, 21]] = 500_000
    plan = plan_shards(sizes, np.arange(50), shard_size=20_000, keep_order=True)
    assert plan.order.tolist() == list(range(50))
    shard_of_sample = np.repeat(np.arange(plan.num_shards), np.diff(plan.bounds))
    for big in (0, 20, 21):
        assert (shard_of_sample == shard_of_sample[big]).sum() == 1
    assert len(plan.oversized) == 3
