"""scripts/tune_shards.py: the recommendation, a small measured run, errors."""

import json
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "scripts" / "tune_shards.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


def test_synthetic_profile_gets_an_instant_recommendation():
    result = run("--samples", "2500000", "--sample-size", "40kB", "--members", "2", "--nodes", "2", "--gpus-per-node", "8", "--workers", "4")
    assert result.returncode == 0, result.stderr
    assert "64 reader(s)" in result.stdout
    assert "--num-shards 768" in result.stdout and "multiple of 64 readers" in result.stdout


def test_source_tree_profile_and_measured_mode(image_tree, tmp_path):
    out = tmp_path / "results.json"
    result = run(image_tree, "--measure", "--subset", "300", "--counts", "1,2,8", "--min-seconds", "0.05",
                 "--measure-workers", "0", "--gpus-per-node", "2", "--workers", "1", "--json", out,
                 "--table", tmp_path / "t.md", "--plot", tmp_path / "p.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t.md").read_text().count("\n") == 2 + 6
    assert "3,000 samples" in result.stdout and "best on this machine" in result.stdout
    rows = json.loads(out.read_text())["results"]
    assert {(r["shards"], r["loader"]) for r in rows} == {(c, l) for c in (1, 2, 8) for l in ("streaming", "indexed")}
    assert all(r["rank_samples"] == 150 and r["samples_per_s"] > 0 for r in rows)
    one = [r for r in rows if r["shards"] == 1][0]
    assert one["idle_readers"] == 1 and one["rank_max_over_min"] == float("inf")


def test_synthetic_profile_measured_mode(tmp_path):
    result = run("--samples", "50000", "--sample-size", "2kB", "--members", "2", "--measure", "--subset", "200",
                 "--counts", "1,4", "--min-seconds", "0.05", "--measure-workers", "0",
                 "--table", tmp_path / "t.md", "--plot", tmp_path / "p.png", "--workdir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "50,000 samples" in result.stdout and "measuring: 200 random samples" in result.stdout
    assert "| 4 |" in (tmp_path / "t.md").read_text()
    assert "plot: " in result.stdout or "matplotlib is not installed" in result.stdout


def test_usage_errors_exit_2(tmp_path):
    assert run("--measure", "--samples", "10").returncode == 2
    assert run(tmp_path / "missing").returncode == 2
    assert run("--samples", "10", "--sample-size", "1kB", "--nodes", "0").returncode == 2
