"""The instant shard-count recommendation: pure arithmetic, exact cases."""

import pytest

from packer.tuning import MB, Cluster, Profile, recommend


def test_large_dataset_on_one_node_gets_a_multiple_of_the_readers():
    profile = Profile(samples=2_500_000, payload_bytes=100_000 * MB, members_per_sample=2)
    rec = recommend(profile, Cluster(nodes=1, gpus_per_node=8, workers=4))
    assert rec.num_shards % 32 == 0
    assert 64 * MB <= rec.shard_bytes <= 1000 * MB
    assert abs(rec.num_shards - profile.tar_bytes / (256 * MB)) <= 16
    assert any("multiple of 32" in r for r in rec.reasons)


def test_small_dataset_keeps_shards_in_range_and_says_readers_stay_busy():
    rec = recommend(Profile(samples=10_000, payload_bytes=100 * MB), Cluster(nodes=2, gpus_per_node=8, workers=4))
    assert rec.num_shards == 1
    assert any("split inside shards" in r for r in rec.reasons)


def test_one_shard_per_reader_when_that_stays_in_range():
    rec = recommend(Profile(samples=64_000, payload_bytes=6_400 * MB), Cluster(nodes=4, gpus_per_node=8, workers=2))
    assert rec.num_shards == 64 and rec.shard_bytes >= 64 * MB


def test_storage_changes_the_target_size():
    profile = Profile(samples=1_000_000, payload_bytes=40_000 * MB)
    local = recommend(profile, Cluster(), "local")
    remote = recommend(profile, Cluster(), "object")
    assert local.num_shards > remote.num_shards
    assert 900 * MB <= remote.shard_bytes <= 1100 * MB
    with pytest.raises(ValueError, match="storage"):
        recommend(profile, Cluster(), "tape")


def test_tiny_samples_warn_about_tar_overhead():
    rec = recommend(Profile(samples=1_000_000, payload_bytes=1_000 * MB), Cluster())
    assert any("--rows" in r for r in rec.reasons)
    assert not any("--rows" in r for r in recommend(Profile(1000, 40 * MB), Cluster()).reasons)
