"""Shared fixtures: real source trees on disk and datasets built from them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from packer import BuildOptions, build
from packer.examples import make_image_tree

REPO = Path(__file__).resolve().parents[1]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(root: Path) -> Dict[str, str]:
    """relative path -> sha256 for every regular file below ``root``."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = sha256_of(path)
    return out


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m packer ARGS`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "packer", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def run_torchrun(script: Path, *args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=N script args`` on CPU (gloo).

    On a timeout torchrun gets SIGTERM, which it forwards to its ranks (they
    run in their own sessions, so killing torchrun alone would leave them
    hanging), and the test fails with what the ranks printed.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        out, err = process.communicate(timeout=60)
        pytest.fail(f"torchrun did not finish in {timeout} s (a rank hung):\n{err[-8000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> Path:
    """3,000 JPEG+JSON samples in 10 class folders, with awkward names in one."""
    root = tmp_path_factory.mktemp("images") / "train"
    make_image_tree(root, classes=10, per_class=300, side=24, distinct_images=200)
    return root


@pytest.fixture(scope="session")
def built(image_tree, tmp_path_factory) -> Path:
    """``image_tree`` packed into ~12 shards with 2 workers."""
    dst = tmp_path_factory.mktemp("built") / "shards"
    total = sum(p.stat().st_size for p in image_tree.rglob("*") if p.is_file())
    build(image_tree, dst, BuildOptions(shard_size=(total + 3 * 1024 * 3000) // 12, workers=2, quiet=True))
    return dst
