"""End to end on a real tree: round trip, readers, reproducibility, balance, verify."""

import subprocess
import tarfile
from collections import Counter

import numpy as np
import pytest
import webdataset as wds

from packer import BuildOptions, PackedIndex, PackerError, build, finalize_build, plan_build, write_planned
from packer.names import source_path
from packer.verify import verify_dataset

from conftest import run_cli, sha256_of, tree_digests


def shard_paths(dst):
    return sorted(dst.glob("*.tar"))


def test_gnu_tar_extracts_every_source_file_byte_for_byte(image_tree, built, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    for shard in shard_paths(built):
        subprocess.run(["tar", "-xf", str(shard), "-C", str(out)], check=True)
    extracted = tree_digests(out)
    # Through the documented rule: member name -> original relative path.
    restored = {}
    for name, digest in extracted.items():
        key, _, ext = name.rpartition(".")
        restored[source_path(key, ext)] = digest
    assert restored == tree_digests(image_tree)


def test_python_tarfile_reads_every_member(built):
    index = PackedIndex(built)
    names = []
    for shard in shard_paths(built):
        with tarfile.open(shard) as tar:
            names += [m.name for m in tar.getmembers()]
    assert len(names) == index.manifest["num_members"] == len(set(names))


def test_webdataset_yields_every_sample_once_with_right_keys(image_tree, built):
    dataset = wds.WebDataset([str(p) for p in shard_paths(built)], shardshuffle=False)
    seen = Counter()
    for sample in dataset:
        key = sample["__key__"]
        seen[key] += 1
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"jpg", "json"}
        assert sample["jpg"] == (image_tree / source_path(key, "jpg")).read_bytes()
        assert sample["json"] == (image_tree / source_path(key, "json")).read_bytes()
    assert len(seen) == 3000 and set(seen.values()) == {1}
    assert "class_000/IMG_1%2Ev2" in seen  # the dotted stem kept its key


def test_index_offsets_point_at_member_bytes(image_tree, built):
    index = PackedIndex(built)
    assert index.num_samples == 3000
    rng = np.random.default_rng(0)
    for i in rng.choice(index.num_samples, 200, replace=False).tolist():
        shard = int(index.sample_shard[i])
        data = index.shard_path(shard).read_bytes()
        for (ext, offset, size), rel in zip(index.members(i), index.source_paths(i)):
            assert data[offset : offset + size] == (image_tree / rel).read_bytes()


def test_shards_are_balanced(built):
    sizes = [s["num_bytes"] for s in PackedIndex(built).shards]
    assert len(sizes) >= 8
    assert max(sizes) / min(sizes) <= 1.10


def test_manifest_totals_and_wids(built):
    manifest = PackedIndex(built).manifest
    shards = manifest["shards"]
    assert sum(s["num_samples"] for s in shards) == manifest["num_samples"] == 3000
    assert manifest["num_bytes"] == sum(p.stat().st_size for p in shard_paths(built))
    assert all(sha256_of(built / s["name"]) == s["sha256"] for s in shards)
    assert {e["ext"]: e["count"] for e in manifest["extensions"]} == {"jpg": 3000, "json": 3000}
    import json

    wids = json.loads((built / "wids.json").read_text())
    assert wids["__kind__"] == "wids-shard-index-v1" and wids["wids_version"] == 1
    assert wids["shardlist"] == [{"url": s["name"], "nsamples": s["num_samples"], "filesize": s["num_bytes"]} for s in shards]


def test_builds_are_byte_identical_for_any_worker_count(image_tree, built, tmp_path):
    reference = tree_digests(built)
    for workers in (1, 2):
        dst = tmp_path / f"w{workers}"
        options = BuildOptions(**{**PackedIndex(built).manifest["settings"], "workers": workers, "quiet": True})
        build(image_tree, dst, options)
        assert tree_digests(dst) == reference


def test_seed_and_no_shuffle_change_the_order(image_tree, tmp_path):
    keys = {}
    for name, options in {
        "seed0": BuildOptions(num_shards=3, quiet=True),
        "seed1": BuildOptions(num_shards=3, seed=1, quiet=True),
        "sorted": BuildOptions(num_shards=3, shuffle=False, quiet=True),
    }.items():
        build(image_tree, tmp_path / name, options)
        index = PackedIndex(tmp_path / name)
        keys[name] = [index.key(i) for i in range(index.num_samples)]
    assert keys["seed0"] != keys["seed1"]
    assert sorted(keys["seed0"]) == sorted(keys["seed1"]) == sorted(keys["sorted"])
    # sorted order: the first shard holds the first classes only; shuffled: all classes
    assert keys["sorted"] == sorted(keys["sorted"], key=lambda k: (k.split("/")[0], k))
    first = {k.split("/")[0] for k in keys["sorted"][:1000]}
    assert first == {"class_000", "class_001", "class_002", "class_003"}
    assert len({k.split("/")[0] for k in keys["seed0"][:1000]}) == 10


def test_verify_passes_then_names_the_shard_with_a_flipped_byte(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    assert verify_dataset(copy) == []
    victim = shard_paths(copy)[5]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    result = run_cli("verify", str(copy), "--quiet")
    assert result.returncode == 1
    failed = {line.split()[1].rstrip(":") for line in result.stderr.splitlines() if line.startswith("FAILED")}
    assert failed == {victim.name}


def test_three_steps_run_separately_give_the_same_dataset(image_tree, built, tmp_path):
    dst = tmp_path / "steps"
    options = BuildOptions(**{**PackedIndex(built).manifest["settings"], "quiet": True})
    plan_build(image_tree, dst, options)
    assert (dst / ".plan" / "plan.json").exists() and not (dst / "index.json").exists()
    with pytest.raises(PackerError, match="not written yet"):
        finalize_build(dst)
    write_planned(dst, shards=[0, 1, 2])
    write_planned(dst)  # the rest
    finalize_build(dst)
    assert tree_digests(dst) == tree_digests(built)
    assert not (dst / ".plan").exists()


def test_oversized_sample_warns_and_gets_its_own_shard(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        (src / f"{i:03d}.bin").write_bytes(bytes(1000))
    (src / "huge.bin").write_bytes(bytes(300_000))
    result = run_cli("build", str(src), str(tmp_path / "dst"), "--shard-size", "50kB", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "warning: sample 'huge'" in result.stderr and "shard of its own" in result.stderr
    index = PackedIndex(tmp_path / "dst")
    last = index.shards[-1]
    assert last["num_samples"] == 1 and index.key(last["first_sample"]) == "huge"


def test_file_vanishing_between_plan_and_write(image_tree, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(image_tree / "class_001", src / "class_001")
    dst = tmp_path / "dst"
    plan_build(src, dst, BuildOptions(num_shards=2, quiet=True))
    victim = src / "class_001" / "000007.json"
    victim.unlink()
    with pytest.raises(Exception, match=r"000007\.json: vanished during the build \(shard shard-00000\d\.tar, offset \d+\)"):
        write_planned(dst)
    assert not list(dst.glob(".*.tmp"))  # no half-written shard left behind
    assert not (dst / "index.json").exists()


def test_file_vanishing_with_skip_drops_the_sample_and_records_it(image_tree, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(image_tree / "class_001", src / "class_001")
    dst = tmp_path / "dst"
    plan_build(src, dst, BuildOptions(num_shards=2, on_error="skip", quiet=True))
    (src / "class_001" / "000007.json").unlink()
    (src / "class_001" / "000008.jpg").write_bytes(b"changed")
    write_planned(dst)
    manifest = finalize_build(dst)
    assert manifest["num_samples"] == 298
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert reasons["class_001/000007.json"] == "vanished during the build"
    assert reasons["class_001/000008.jpg"].startswith("changed during the build")
    assert verify_dataset(dst) == []
    keys = [s["__key__"] for s in wds.WebDataset([str(p) for p in shard_paths(dst)], shardshuffle=False)]
    assert len(keys) == 298 and "class_001/000007" not in keys


def test_same_size_modification_and_fifo_replacement_are_caught(tmp_path):
    import os

    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"{i}.txt").write_text(f"sample {i}")
    dst = tmp_path / "dst"
    plan_build(src, dst, BuildOptions(num_shards=1, on_error="skip", quiet=True))
    os.utime(src / "3.txt", ns=(1, 1))  # same size, other modification time
    (src / "5.txt").unlink()
    os.mkfifo(src / "5.txt")  # a FIFO must not hang the build
    write_planned(dst)
    manifest = finalize_build(dst)
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {
        "3.txt": "modified during the build (modification time changed)",
        "5.txt": "is no longer a regular file",
    }
    assert manifest["num_samples"] == 8


def test_large_member_is_streamed_and_rolled_back_when_its_sample_fails(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big.bin", "wb") as f:
        f.truncate(20 << 20)  # larger than the streaming threshold
    (src / "big.json").write_text("{}")
    (src / "small.bin").write_bytes(b"x" * 100)
    dst = tmp_path / "dst"
    plan_build(src, dst, BuildOptions(num_shards=1, shuffle=False, on_error="skip", quiet=True))
    (src / "big.json").unlink()  # big.bin is written first, then its sample fails
    write_planned(dst)
    manifest = finalize_build(dst)
    assert manifest["num_samples"] == 1 and manifest["shards"][0]["num_bytes"] == 512 + 512 + 1024
    assert verify_dataset(dst) == []
    # and without the failure the 20 MB member round-trips
    (src / "big.json").write_text("{}")
    build(src, tmp_path / "ok", BuildOptions(quiet=True))
    index = PackedIndex(tmp_path / "ok")
    i = [index.key(j) for j in range(index.num_samples)].index("big")
    ext, offset, size = index.members(i)[0]
    with open(index.shard_path(int(index.sample_shard[i])), "rb") as f:
        f.seek(offset)
        assert (ext, size) == ("bin", 20 << 20) and f.read(size) == bytes(20 << 20)


@pytest.mark.parametrize("tamper, message", [
    (lambda d: _rewrite_array(d, "sample_offset", lambda a: a[::-1]), "starts at offset"),
    (lambda d: _rewrite_array(d, "sample_shard", lambda a: a * 0), "is in shard 0"),
    (lambda d: _rewrite_array(d, "member_ext", lambda a: a * 0 + 7), "refers to extensions"),
    (lambda d: _edit_json(d / "wids.json", lambda w: w["shardlist"][0].update(nsamples=1)), "wids.json: shard list differs"),
    (lambda d: _edit_json(d / "index.json", lambda m: m.update(num_bytes=5)), "num_bytes is 5"),
    (lambda d: _edit_json(d / "index.json", lambda m: m["extensions"][0].update(count=1)), "extension counts"),
])
def test_verify_catches_index_tampering(built, tmp_path, tamper, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    tamper(copy)
    problems = verify_dataset(copy)
    assert any(message in p for p in problems), problems


def _rewrite_array(root, name, change):
    path = root / "index" / f"{name}.npy"
    np.save(path, np.ascontiguousarray(change(np.load(path))))


def _edit_json(path, change):
    import json

    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_written_shard_is_final_only_once_committed(tmp_path):
    """write_shard(commit=False) leaves the shard under its temporary name
    and unrecorded; commit_shard renames and records it, and names the
    shard if its file is gone."""
    import os

    from packer.index import load_plan, load_shard_records
    from packer.write import _job, commit_shard, write_shard

    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"{i:02d}.txt").write_text(f"sample {i}")
    dst = tmp_path / "dst"
    plan_build(src, dst, BuildOptions(num_shards=2, quiet=True))
    table, bounds, meta = load_plan(dst)
    job = _job(str(dst), meta)
    results = [write_shard(table, bounds, j, job, commit=False) for j in range(2)]
    for result in results:
        assert os.path.exists(result.temp) and not (dst / job.names[result.shard]).exists()
    assert load_shard_records(dst) == {}
    commit_shard(job, results[0])
    assert results[0].temp is None and (dst / job.names[0]).stat().st_size == results[0].num_bytes
    assert set(load_shard_records(dst)) == {0}
    os.unlink(results[1].temp)
    with pytest.raises(PackerError, match=rf"{job.names[1]}: cannot write shard"):
        commit_shard(job, results[1])
    assert set(load_shard_records(dst)) == {0}
    with pytest.raises(PackerError, match="not written yet"):
        finalize_build(dst)


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_written_before_a_failure_are_kept_for_resume(tmp_path, workers):
    """A build that stops on a bad file still commits (renames and records)
    every shard that was written and leaves no temporary file, so that
    --resume has only the rest to write."""
    import os

    from packer.index import load_shard_records

    src = tmp_path / "src"
    src.mkdir()
    for i in range(256):
        (src / f"{i:03d}.bin").write_bytes(os.urandom(50_000))
    dst = tmp_path / "dst"
    # Enough shards that some have not started when shard 0 fails: the pool
    # cancels those, and waiting for them once hung the build.
    plan_build(src, dst, BuildOptions(num_shards=32, shuffle=False, quiet=True))
    with open(src / "000.bin", "ab") as f:  # the first file of shard 0 grows
        f.write(b"more")
    with pytest.raises(PackerError, match=r"000\.bin: changed during the build .*shard shard-000000\.tar"):
        write_planned(dst, workers=workers)
    assert not list(dst.glob(".*.tmp"))
    kept = set(load_shard_records(dst))
    assert {int(p.name[6:12]) for p in dst.glob("shard-*.tar")} == kept and 0 not in kept
    if workers == 2:
        assert kept  # the other worker's shard was written meanwhile, and kept
