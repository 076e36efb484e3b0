"""Interrupted builds resume to byte-identical output; changed sources are refused."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from packer.examples import make_blob_tree

from conftest import run_cli, tree_digests


@pytest.fixture(scope="module")
def blob_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume") / "src"
    make_blob_tree(root, count=4000, size=6000, per_dir=500)
    return root


@pytest.fixture(scope="module")
def reference(blob_src, tmp_path_factory):
    dst = tmp_path_factory.mktemp("reference") / "dst"
    assert run_cli("build", str(blob_src), str(dst), "--num-shards", "40", "--workers", "1", "-q").returncode == 0
    return tree_digests(dst)


def _kill_when(process, ready, timeout=60.0):
    """SIGKILL ``process`` as soon as ``ready()`` holds (polled every ms)."""
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("point", ["start", "plan saved", 5, 20, 39])
def test_sigkill_at_any_point_then_resume_gives_identical_output(blob_src, reference, tmp_path, point):
    dst = tmp_path / "dst"
    command = [sys.executable, "-m", "packer", "build", str(blob_src), str(dst), "--num-shards", "40", "--workers", "1", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if point == "start":
        ready = lambda: True  # noqa: E731
    elif point == "plan saved":
        ready = lambda: (dst / ".plan" / "plan.json").exists()  # noqa: E731
    else:
        ready = lambda: dst.is_dir() and sum(n.endswith(".tar") for n in os.listdir(dst)) >= point  # noqa: E731
    _kill_when(process, ready)
    if point in ("plan saved", 5, 20):
        assert not (dst / "index.json").exists()  # really interrupted
    result = run_cli(*command[3:], "--resume")  # the same command again, with --resume
    assert result.returncode == 0, result.stderr
    assert tree_digests(dst) == reference
    assert not [p for p in os.listdir(dst) if p.endswith(".tmp")]


@pytest.mark.parametrize("point", ["plan saved", 3, 10, 25])
def test_ctrl_c_to_a_parallel_build_stops_it_cleanly_then_resume(blob_src, reference, tmp_path, point):
    """Ctrl-C in a terminal signals the whole process group, workers
    included.  The build must stop promptly (a worker killed while holding
    the pool's queue lock used to hang it), say so in one line, and resume
    to identical output."""
    dst = tmp_path / "dst"
    command = [sys.executable, "-m", "packer", "build", str(blob_src), str(dst), "--num-shards", "40", "--workers", "2", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if point == "plan saved":
        ready = lambda: (dst / ".plan" / "plan.json").exists()  # noqa: E731
    else:
        ready = lambda: dst.is_dir() and sum(n.endswith(".tar") for n in os.listdir(dst)) >= point  # noqa: E731
    deadline = time.monotonic() + 60
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"the build hung after Ctrl-C ({point})")
    if process.returncode != 0:  # it may have finished just before the signal
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr and stderr.startswith("interrupted; run the same command with --resume"), stderr
        again = run_cli(*command[3:])  # without --resume: told how to finish it
        assert again.returncode == 2 and "unfinished build; add --resume to finish it" in again.stderr, again.stderr
    result = run_cli(*command[3:], "--resume")
    assert result.returncode == 0, result.stderr
    assert tree_digests(dst) == reference
    assert not [p for p in os.listdir(dst) if p.endswith(".tmp")]


def test_resume_keeps_finished_shards_and_rewrites_damaged_ones(blob_src, reference, tmp_path):
    from packer import BuildOptions, plan_build, write_planned

    dst = tmp_path / "dst"
    plan_build(blob_src, dst, BuildOptions(num_shards=40, quiet=True))
    write_planned(dst, shards=list(range(10)))
    kept = (dst / "shard-000003.tar").stat().st_mtime_ns
    with open(dst / "shard-000005.tar", "r+b") as f:  # finished, then damaged
        f.seek(1000)
        f.write(b"X")
    (dst / ".shard-000011.tar.12345.tmp").write_bytes(b"half")  # left by a killed writer
    result = run_cli("build", str(blob_src), str(dst), "--num-shards", "30", "--resume")
    assert result.returncode == 2 and "num_shards 30 (planned 40)" in result.stderr
    result = run_cli("build", str(blob_src), str(dst), "--num-shards", "40", "--resume")
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout and "/s)" not in result.stdout  # it packed only part: no rate
    assert tree_digests(dst) == reference
    assert (dst / "shard-000003.tar").stat().st_mtime_ns == kept  # not rewritten


def test_resume_refuses_when_the_source_changed(blob_src, tmp_path):
    import shutil

    from packer import BuildOptions, plan_build

    src = tmp_path / "src"
    shutil.copytree(blob_src / "00000", src / "00000")
    dst = tmp_path / "dst"
    plan_build(src, dst, BuildOptions(num_shards=4, quiet=True))
    (src / "00000" / "00000001.bin").unlink()
    (src / "00000" / "new.bin").write_bytes(b"n")
    os.utime(src / "00000" / "00000002.bin", ns=(5, 5))
    result = run_cli("build", str(src), str(dst), "--num-shards", "4", "--resume")
    assert result.returncode == 1
    message = result.stderr
    assert "1 sample(s) added, e.g. 00000/new" in message
    assert "1 sample(s) removed, e.g. 00000/00000001" in message
    assert "1 sample(s) changed, e.g. 00000/00000002" in message


def test_resume_of_a_complete_dataset_does_nothing(blob_src, tmp_path):
    dst = tmp_path / "dst"
    assert run_cli("build", str(blob_src / "00001"), str(dst), "-q").returncode == 0
    before = tree_digests(dst)
    result = run_cli("build", str(blob_src / "00001"), str(dst), "--resume", "-q")
    assert result.returncode == 0 and "already complete" in result.stdout
    assert "/s)" not in result.stdout  # no rate for a build that packed nothing now
    assert tree_digests(dst) == before
    assert run_cli("build", str(blob_src), str(dst), "--resume", "--overwrite").returncode == 2


def test_resume_of_a_complete_dataset_refuses_other_options(blob_src, tmp_path):
    dst = tmp_path / "dst"
    assert run_cli("build", str(blob_src / "00001"), str(dst), "--shard-size", "1MB", "-q").returncode == 0
    before = tree_digests(dst)
    result = run_cli("build", str(blob_src / "00001"), str(dst), "--shard-size", "2MB", "--resume", "-q")
    assert result.returncode == 2
    assert "--resume needs the options of the finished build; these differ: shard_size 2000000 (built with 1000000)" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digests(dst) == before
    again = run_cli("build", str(blob_src / "00001"), str(dst), "--shard-size", "1MB", "--resume", "-q")
    assert again.returncode == 0 and "already complete" in again.stdout
    # A manifest from before a setting existed: the missing one counts as its default.
    manifest = json.loads((dst / "index.json").read_text())
    del manifest["settings"]["rows"], manifest["settings"]["labels_from_dir"]
    (dst / "index.json").write_text(json.dumps(manifest))
    older = run_cli("build", str(blob_src / "00001"), str(dst), "--shard-size", "1MB", "--resume", "-q")
    assert older.returncode == 0 and "already complete" in older.stdout, older.stderr
    assert run_cli("build", str(blob_src / "00001"), str(dst), "--rows", "--shard-size", "1MB", "--resume", "-q").returncode == 2


_STUCK_WORKER = r"""
import os, signal, sys, threading, time
from pathlib import Path

import packer.write as write
from packer import BuildOptions, PackerError, plan_build, write_planned

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
src.mkdir()
for i in range(8):
    (src / f"{i}.txt").write_text(str(i))
plan_build(src, dst, BuildOptions(num_shards=4, shuffle=False, quiet=True))
real = write._run_in_worker


def stuck_or_failing(shard):
    if shard == 0:
        raise PackerError("shard 0 fails")
    if shard == 1:
        time.sleep(60)  # a read that hangs, e.g. on a lost network mount
    return real(shard)


write._run_in_worker = stuck_or_failing
threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
start = time.monotonic()
try:
    write_planned(dst, workers=2)
except BaseException as exc:
    print(f"{type(exc).__name__} after {time.monotonic() - start:.0f} s")
"""


def test_ctrl_c_stops_the_wait_for_a_stuck_worker_after_an_error(tmp_path):
    """After one shard fails, the build waits for the shards being written;
    Ctrl-C during that wait must stop it at once, even if a worker hangs."""
    result = subprocess.run([sys.executable, "-c", _STUCK_WORKER, str(tmp_path / "src"), str(tmp_path / "dst")],
                            capture_output=True, text=True, timeout=50)
    assert result.stdout.strip() in ("KeyboardInterrupt after 1 s", "KeyboardInterrupt after 2 s"), result.stdout + result.stderr
