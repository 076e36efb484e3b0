"""The command line: help, exit codes, one-line errors, no torch at start-up."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import run_cli, tree_digests


def small_tree(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{i:03d}.txt").write_text(f"sample {i}")
    return root


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", [[], ["build"], ["verify"], ["info"]])
def test_help_explains_every_option_with_defaults(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    expected = {(): ["build", "verify", "info", "--version"], ("verify",): ["--workers", "--quiet"], ("info",): ["--json"]}
    for option in expected.get(tuple(command), []):
        assert option in result.stdout
    if command == ["build"]:
        for option in ["--shard-size", "--num-shards", "--seed", "--no-shuffle", "--workers", "--key-rule",
                       "--include-hidden", "--on-error", "--overwrite", "--prefix", "--dali-index", "--quiet"]:
            assert option in result.stdout
        text = " ".join(result.stdout.split())
        assert "(default: 256MB)" in text and "(default: 0)" in text and "(default: stop)" in text


def test_usage_errors_exit_2(tmp_path):
    src = small_tree(tmp_path / "src")
    assert run_cli().returncode == 2
    assert run_cli("build", str(src)).returncode == 2
    assert_one_line_error(run_cli("build", str(tmp_path / "nope"), str(tmp_path / "d")), 2, "nope", "does not exist")
    assert_one_line_error(run_cli("build", str(src), str(src / "inner")), 2, "inside the source")
    result = run_cli("build", str(src), str(tmp_path / "d"), "--shard-size", "lots")
    assert result.returncode == 2 and "not a size: 'lots'" in result.stderr
    result = run_cli("build", str(src), str(tmp_path / "d"), "--num-shards", "2", "--shard-size", "1MB")
    assert result.returncode == 2 and "not allowed with" in result.stderr
    assert_one_line_error(run_cli("build", str(src), str(tmp_path / "d"), "--num-shards", "21"), 2, "more than the 20 samples")


def test_empty_source_is_a_failure(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("build", str(tmp_path / "empty"), str(tmp_path / "d")), 1, "no samples found")
    (tmp_path / "only_hidden").mkdir()
    (tmp_path / "only_hidden" / ".x.txt").write_text("x")
    assert_one_line_error(
        run_cli("build", str(tmp_path / "only_hidden"), str(tmp_path / "d2")), 1, "no samples found", ".x.txt: hidden"
    )


def test_destination_not_empty_refused_unless_overwrite(tmp_path):
    src = small_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    assert run_cli("build", str(src), str(dst), "-q").returncode == 0
    first = tree_digests(dst)
    assert_one_line_error(run_cli("build", str(src), str(dst)), 2, "not empty", "--overwrite")
    assert run_cli("build", str(src), str(dst), "--overwrite", "-q").returncode == 0
    assert tree_digests(dst) == first
    (dst / "my-notes.txt").write_text("precious")
    assert_one_line_error(run_cli("build", str(src), str(dst), "--overwrite"), 2, "my-notes.txt")
    assert (dst / "my-notes.txt").read_text() == "precious"


def test_bad_file_stops_with_exit_1_or_is_skipped_and_listed(tmp_path):
    src = small_tree(tmp_path / "src")
    os.symlink(src / "missing.txt", src / "broken.txt")
    assert_one_line_error(run_cli("build", str(src), str(tmp_path / "d1")), 1, "broken.txt", "broken symbolic link")
    result = run_cli("build", str(src), str(tmp_path / "d2"), "--on-error", "skip")
    assert result.returncode == 0
    assert "skipped 1 entries, e.g. broken.txt (broken symbolic link)" in result.stdout
    info = run_cli("info", str(tmp_path / "d2"), "--json")
    import json

    summary = json.loads(info.stdout)
    assert summary["num_samples"] == 20 and summary["skipped_by_reason"] == {"broken symbolic link": 1}


def test_info_and_verify_on_a_directory_that_is_not_a_dataset(tmp_path):
    # Not a dataset at all: a usage error, like a missing path.
    assert_one_line_error(run_cli("info", str(tmp_path)), 2, "no index.json (not a dataset made by packer build)")
    assert_one_line_error(run_cli("verify", str(tmp_path)), 2, "no index.json (not a dataset made by packer build)")
    # A build that did not finish: the data is not there yet, a failure.
    (tmp_path / ".plan").mkdir()
    assert_one_line_error(run_cli("info", str(tmp_path)), 1, "no index.json (the build did not finish)")
    assert_one_line_error(run_cli("verify", str(tmp_path)), 1, "the build did not finish")
    assert_one_line_error(run_cli("verify", str(tmp_path / "missing")), 2, "no such directory")
    assert_one_line_error(run_cli("info", str(tmp_path / "missing")), 2, "no such directory")
    (tmp_path / "index.json").write_text("{}")
    assert_one_line_error(run_cli("info", str(tmp_path / "index.json")), 2, "not a directory (pass the dataset directory)")


def test_build_summary_and_info(tmp_path):
    src = small_tree(tmp_path / "src")
    result = run_cli("build", str(src), str(tmp_path / "d"), "--num-shards", "3")
    assert result.returncode == 0
    assert "packed 20 samples (20 files" in result.stdout and "into 3 shards" in result.stdout
    info = run_cli("info", str(tmp_path / "d"))
    assert "samples      20 (20 files) in 3 shards" in info.stdout


def test_no_torch_import_for_help_or_a_plain_build(tmp_path):
    src = small_tree(tmp_path / "src")
    code = (
        "import sys\n"
        "from packer.cli import main\n"
        f"assert main(['build', {str(src)!r}, {str(tmp_path / 'd')!r}, '-q', '--workers', '1']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "packer", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert " torch" not in result.stderr


def run_as_nobody(*args: str):
    """Run the CLI in a forked child that dropped to uid/gid 65534.

    Permissions bind only non-root users, and the interpreter may live where
    'nobody' cannot execute it, so the child is a fork of this process (every
    module it needs already imported) rather than a new interpreter.
    """
    import traceback

    import packer.build, packer.cli, packer.info, packer.verify  # noqa: F401  (import before dropping rights)
    import mmap, tqdm  # noqa: F401,E401

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            os.close(read_fd)
            sys.stdout = sys.stderr = os.fdopen(write_fd, "w")
            os.setgid(65534)
            os.setuid(65534)
            code = packer.cli.main(list(args))
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), output, output)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_unreadable_file_and_read_only_destination_as_an_unprivileged_user():
    base = Path(tempfile.mkdtemp(prefix="packer-perm-"))
    try:
        base.chmod(0o777)
        src = small_tree(base / "src", 5)
        (src / "002.txt").chmod(0)
        assert_one_line_error(run_as_nobody("build", str(src), str(base / "d1"), "--workers", "1"), 1, "002.txt", "permission denied")
        result = run_as_nobody("build", str(src), str(base / "d2"), "--on-error", "skip", "-q", "--workers", "1")
        assert result.returncode == 0, result.stdout
        assert "skipped 1 entries, e.g. 002.txt (permission denied)" in result.stdout
        (base / "ro").mkdir(mode=0o555)
        assert_one_line_error(run_as_nobody("build", str(src), str(base / "ro" / "d")), 1, "cannot create destination")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_overwrite_refuses_a_directory_that_holds_no_previous_build(tmp_path):
    src = small_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    (dst / "index").mkdir(parents=True)
    (dst / "index" / "notes.txt").write_text("n")
    (dst / "backup-2023.tar").write_text("precious")
    (dst / "photos.tar").mkdir()
    before = tree_digests(dst)
    assert_one_line_error(run_cli("build", str(src), str(dst), "--overwrite"), 2, "holds none")
    assert tree_digests(dst) == before


def test_overwrite_keeps_unlisted_tars_beside_a_previous_build(tmp_path):
    src = small_tree(tmp_path / "src")
    dst = tmp_path / "dst"
    assert run_cli("build", str(src), str(dst), "-q").returncode == 0
    (dst / "backup.tar").write_text("precious")
    assert_one_line_error(run_cli("build", str(src), str(dst), "--overwrite"), 2, "backup.tar")
    assert (dst / "backup.tar").read_text() == "precious"


def test_failed_rebuild_keeps_the_previous_dataset(tmp_path):
    good = small_tree(tmp_path / "good")
    dst = tmp_path / "dst"
    assert run_cli("build", str(good), str(dst), "-q").returncode == 0
    before = tree_digests(dst)
    bad = small_tree(tmp_path / "bad", 3)
    os.symlink(bad / "nowhere", bad / "broken.txt")
    assert_one_line_error(run_cli("build", str(bad), str(dst), "--overwrite"), 1, "broken symbolic link")
    assert_one_line_error(run_cli("build", str(bad), str(dst), "--overwrite", "--on-error", "skip", "--num-shards", "9"), 2, "more than the 3 samples")
    assert tree_digests(dst) == before
    assert run_cli("verify", str(dst), "-q").returncode == 0


def test_full_disk_is_a_one_line_error_and_leaves_nothing_complete(tmp_path):
    import resource

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(200_000))
    result = subprocess.run(
        [sys.executable, "-m", "packer", "build", str(src), str(tmp_path / "d"), "-q", "--workers", "1"],
        capture_output=True, text=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)),
    )
    assert_one_line_error(result, 1, "shard-000000.tar: cannot write shard: File too large")
    assert not (tmp_path / "d" / "index.json").exists() and not list((tmp_path / "d").glob("*.tar"))


def test_control_characters_in_names_cannot_forge_output_lines(tmp_path):
    src = small_tree(tmp_path / "src", 2)
    os.symlink(src / "nowhere", src / "evil\nerror: fake.txt")
    result = run_cli("build", str(src), str(tmp_path / "d"))
    assert_one_line_error(result, 1, "evil\\nerror: fake.txt")


def test_every_sample_skipped_is_a_failure(tmp_path):
    from packer import BuildOptions, PackerError, finalize_build, plan_build, write_planned

    src = small_tree(tmp_path / "src", 4)
    plan_build(src, tmp_path / "d", BuildOptions(on_error="skip", quiet=True))
    for path in src.iterdir():
        path.unlink()
    write_planned(tmp_path / "d")
    with pytest.raises(PackerError, match="every sample was skipped"):
        finalize_build(tmp_path / "d")
    assert not (tmp_path / "d" / "index.json").exists()
