"""The benchmark scripts run end to end on tiny datasets and check their own counts."""

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


def test_check_read_ahead_times_both_settings_on_a_dataset(tmp_path):
    from packer import BuildOptions, build

    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):
        (src / f"{i:03d}.bin").write_bytes(bytes([i % 256]) * 1000)
    build(src, tmp_path / "ds", BuildOptions(quiet=True, workers=1, num_shards=2))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_read_ahead.py"), str(tmp_path / "ds"), "--rounds", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 shards" in result.stdout and "300 samples per pass" in result.stdout
    assert result.stdout.count("round 1: read_ahead=") == 2
    assert "best: read_ahead=True" in result.stdout
    missing = subprocess.run([sys.executable, str(REPO / "scripts" / "check_read_ahead.py"), str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "error:" in missing.stderr and "Traceback" not in missing.stderr


def test_bench_indexed_times_ours_wids_and_the_reads_alone(tmp_path):
    out = tmp_path / "indexed.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_indexed.py"), "--scale", "0.02", "--repeat", "1", "--min-seconds", "0.05",
         "--workers", "none,0", "--json", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    cells = {(r["dataset"], r["workers"]) for r in rows}
    assert cells == {(d, w) for d in ("jpeg40k", "bin1k") for w in (None, 0)}
    for cell in cells:
        by_method = {r["method"]: r for r in rows if (r["dataset"], r["workers"]) == cell}
        assert set(by_method) == {"ours", "wids", "reads"}
        assert len({r["nbytes"] for r in by_method.values()}) == 1 and by_method["ours"]["nbytes"] > 0
        assert by_method["wids"]["ratio_to_wids"] is None and by_method["reads"]["ratio_to_wids"] > 0
    assert result.stdout.count("reads alone vs wids:") == 4
    assert list(tmp_path.glob("bench-indexed-*")) == []
