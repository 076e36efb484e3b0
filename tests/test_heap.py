"""loaders.heap: freed batches stay in the heap instead of being faulted in again.

Each case runs in a fresh interpreter, because the setting is per process
and this test process's heap has long since been tuned by glibc itself.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from loaders import heap
from loaders.heap import is_glibc

pytestmark = pytest.mark.skipif(not is_glibc(), reason="the thresholds are glibc's")

# Allocate a 10 MB batch of 40 kB bytes objects (pages touched), free it,
# allocate it again: print the minor page faults of the second allocation.
_SCRIPT = textwrap.dedent(
    """
    import importlib.util, resource, sys
    spec = importlib.util.spec_from_file_location("heap", sys.argv[2])  # without importing torch
    heap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(heap)
    applied = heap.keep_freed_heap() if sys.argv[1] == "tune" else False
    def batch():
        return [b"x" * 40000 for _ in range(256)]
    first = batch()
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = batch()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str, **env: str) -> tuple:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    environment.update(env)
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode, heap.__file__], capture_output=True, text=True, check=True, env=environment
    ).stdout.split()
    return out[0] == "True", int(out[1])


def test_a_freed_batch_is_reused_without_page_faults():
    applied, faults = _faults("tune")
    assert applied
    assert faults < 100  # ~2,500 pages would be faulted in again without it


def test_without_it_the_batch_is_faulted_in_again():
    # The control: shows the test above measures what it claims.
    applied, faults = _faults("plain")
    assert not applied
    assert faults > 1000


def test_a_users_own_malloc_setting_wins():
    applied, faults = _faults("tune", MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied
    assert faults > 1000
    applied, _ = _faults("tune", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert not applied
    applied, _ = _faults("tune", GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F")
    assert applied


def test_opening_a_dataset_applies_it(tmp_path):
    from packer import BuildOptions, build
    from packer.examples import make_blob_tree

    make_blob_tree(tmp_path / "src", count=4, size=100, per_dir=4, seed=0)
    build(tmp_path / "src", tmp_path / "ds", BuildOptions(quiet=True, workers=1))
    script = (
        "import sys, loaders.heap as h; from loaders import IndexedTarDataset, StreamingTarDataset; "
        "cls = IndexedTarDataset if sys.argv[2] == 'indexed' else StreamingTarDataset; "
        "assert not h._done; cls(sys.argv[1]); print(h._done)"
    )
    for kind in ("indexed", "streaming"):
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ds"), kind], capture_output=True, text=True, check=True)
        assert out.stdout.split() == ["True"], kind
