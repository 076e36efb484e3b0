"""scripts/bench.py runs end to end on tiny datasets and checks its own counts."""

import json
import subprocess
import sys

from conftest import REPO


def test_bench_runs_every_method_on_tiny_datasets(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--scale", "0.02", "--repeat", "1", "--workers", "0",
         "--caches", "warm,cold", "--json", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["pack_mb_s"]) == {"jpeg40k", "bin1k", "ptrows"}
    row = data["read_samples_s"]["bin1k|cold|0"]
    assert {"cat", "per-file", "stream", "stream-shuffled", "webdataset", "indexed"} <= set(row)
    assert "## Reading" in result.stdout
    assert list(tmp_path.glob("bench-*")) == []  # its work dir is removed
