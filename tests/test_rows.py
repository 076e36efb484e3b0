"""Row containers (.pt/.npy/.npz) and folder labels as sources."""

import json

import numpy as np
import pytest
import torch
import webdataset as wds

from loaders import IndexedTarDataset
from packer import BuildOptions, PackerError, build

from conftest import run_cli


@pytest.fixture(scope="module")
def row_tree(tmp_path_factory):
    """20 .pt files of (x, y), k from 1 to 500 rows, plus .npy and .npz files."""
    root = tmp_path_factory.mktemp("rows") / "src"
    rng = np.random.default_rng(0)
    expected = {}  # (container, row) -> {ext: value}
    ks = np.linspace(1, 500, 20).astype(int)
    for n, k in enumerate(ks):
        x = torch.from_numpy(rng.standard_normal((k, 3, 32, 32)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 10, k).astype(np.int64))
        path = root / f"part{n % 3}" / f"file_{n:02d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save((x, y), path)
        for i in range(k):
            expected[(str(path.relative_to(root)), i)] = {"0.npy": x[i].numpy(), "1.cls": int(y[i])}
    arr = rng.integers(-5, 5, (37, 4, 2)).astype(np.int16)
    np.save(root / "part0" / "plain.npy", arr)
    for i in range(37):
        expected[("part0/plain.npy", i)] = {"npy": arr[i]}
    feats, labels = rng.random((11, 5)).astype(np.float64), np.arange(11, dtype=np.int32)
    np.savez(root / "part1" / "pairs.npz", feats=feats, label=labels)
    for i in range(11):
        expected[("part1/pairs.npz", i)] = {"feats.npy": feats[i], "label.cls": int(labels[i])}
    return root, expected, int(ks.sum()) + 37 + 11


def row_of(key: str):
    from packer.names import unescape_key

    container, row = unescape_key(key).rsplit("/", 1)
    return container, int(row)


def check_equal(got, want):
    if isinstance(want, int):
        assert got == want
    else:
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def test_rows_round_trip_through_webdataset_and_the_indexed_loader(row_tree, tmp_path):
    root, expected, total = row_tree
    dst = tmp_path / "dst"
    build(root, dst, BuildOptions(rows=True, shard_size=2_000_000, quiet=True))
    manifest = json.loads((dst / "index.json").read_text())
    assert manifest["num_samples"] == total and manifest["num_shards"] > 1
    seen = set()
    for sample in wds.WebDataset(sorted(str(p) for p in dst.glob("*.tar")), shardshuffle=False).decode():
        where = row_of(sample["__key__"])
        assert where not in seen
        seen.add(where)
        values = {k: v for k, v in sample.items() if not k.startswith("__")}
        assert set(values) == set(expected[where])
        for ext, want in expected[where].items():
            check_equal(values[ext], want)
    assert seen == set(expected)
    dataset = IndexedTarDataset(dst, decode="default")
    assert len(dataset) == total
    for i in range(0, total, 7):
        sample = dataset[i]
        for ext, want in expected[row_of(sample["__key__"])].items():
            check_equal(sample[ext], want)


def test_image_folder_labels_and_class_list(tmp_path):
    src = tmp_path / "src"
    for cls in ["zebra", "ant", "Moth"]:
        (src / cls / "sub").mkdir(parents=True)
        (src / cls / "a.jpg").write_bytes(b"a")
        (src / cls / "sub" / "b.jpg").write_bytes(b"b")
    (src / "empty_class").mkdir()
    build(src, tmp_path / "dst", BuildOptions(labels_from_dir=True, quiet=True))
    manifest = json.loads((tmp_path / "dst" / "index.json").read_text())
    classes = ["Moth", "ant", "empty_class", "zebra"]  # sorted like torchvision's ImageFolder
    assert manifest["classes"] == classes
    assert f"classes      4 ({', '.join(classes)})" in run_cli("info", str(tmp_path / "dst")).stdout
    labels = {s["__key__"]: int(s["cls"]) for s in wds.WebDataset(str(tmp_path / "dst" / "shard-000000.tar"), shardshuffle=False)}
    assert labels == {f"{c}/{p}": classes.index(c) for c in ["zebra", "ant", "Moth"] for p in ("a", "sub/b")}


def test_labels_refuse_files_outside_class_folders_and_existing_cls(tmp_path):
    src = tmp_path / "src"
    (src / "cat").mkdir(parents=True)
    (src / "cat" / "a.jpg").write_bytes(b"a")
    (src / "stray.jpg").write_bytes(b"s")
    with pytest.raises(PackerError, match="stray.jpg: not inside a class directory"):
        build(src, tmp_path / "d1", BuildOptions(labels_from_dir=True, quiet=True))
    (src / "stray.jpg").unlink()
    (src / "cat" / "a.cls").write_text("3")
    with pytest.raises(PackerError, match="a.cls: a .cls file where --labels-from-dir adds the label"):
        build(src, tmp_path / "d2", BuildOptions(labels_from_dir=True, quiet=True))


@pytest.mark.parametrize("content, message", [
    ((torch.zeros(3, 2), torch.zeros(4)), "different numbers of rows"),
    (torch.tensor(3.0), "0-d value"),
    ({"a": "text"}, "not a tensor"),
    (torch.zeros(3, dtype=torch.complex32), "NumPy cannot store"),
])
def test_bad_containers_name_the_file(tmp_path, content, message):
    src = tmp_path / "src"
    src.mkdir()
    torch.save(content, src / "bad.pt")
    (src / "good.txt").write_text("g")
    with pytest.raises(PackerError, match=rf"bad\.pt.*{message}"):
        build(src, tmp_path / "d", BuildOptions(rows=True, quiet=True))
    build(src, tmp_path / "skip", BuildOptions(rows=True, on_error="skip", quiet=True))
    manifest = json.loads((tmp_path / "skip" / "index.json").read_text())
    assert manifest["num_samples"] == 1 and manifest["skipped"][0]["path"] == "bad.pt"


def test_pickled_objects_and_empty_files_are_refused(tmp_path):
    import pickle

    src = tmp_path / "src"
    src.mkdir()
    (src / "evil.pt").write_bytes(pickle.dumps(print))
    result = run_cli("build", str(src), str(tmp_path / "d"), "--rows")
    assert result.returncode == 1 and "evil.pt: not loadable as tensors with weights_only=True" in result.stderr
    (src / "evil.pt").unlink()
    (src / "empty.npy").write_bytes(b"")
    result = run_cli("build", str(src), str(tmp_path / "d2"), "--rows")
    assert result.returncode == 1 and "empty.npy: cannot read as a .npy file" in result.stderr


def test_bfloat16_is_stored_as_exact_float32_and_recorded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    values = torch.tensor([[1.5, -2.25], [3.0, 1e-3]], dtype=torch.bfloat16)
    torch.save({"w": values}, src / "b.pt")
    build(src, tmp_path / "d", BuildOptions(rows=True, quiet=True))
    manifest = json.loads((tmp_path / "d" / "index.json").read_text())
    assert manifest["row_dtypes"] == {"b.pt": {"w.npy": "bfloat16"}}
    dataset = IndexedTarDataset(tmp_path / "d", decode="default")
    rows = sorted((s["__key__"], s["w.npy"]) for s in (dataset[i] for i in range(len(dataset))))
    for i, (_, got) in enumerate(rows):
        assert got.dtype == np.float32 and np.array_equal(got, values[i].float().numpy())


def test_rows_are_balanced_and_reproducible(row_tree, tmp_path):
    root, _, total = row_tree
    digests = []
    for workers in (1, 2):
        dst = tmp_path / f"w{workers}"
        build(root, dst, BuildOptions(rows=True, num_shards=6, workers=workers, quiet=True))
        manifest = json.loads((dst / "index.json").read_text())
        sizes = [s["num_bytes"] for s in manifest["shards"]]
        assert max(sizes) / min(sizes) <= 1.10
        digests.append([s["sha256"] for s in manifest["shards"]])
    assert digests[0] == digests[1]


def test_container_labels_clash_with_folder_labels(tmp_path):
    src = tmp_path / "src"
    (src / "cat").mkdir(parents=True)
    np.save(src / "cat" / "lab.npy", np.array([3, 4]))
    with pytest.raises(PackerError, match=r"lab\.npy: its rows already have a \.cls field"):
        build(src, tmp_path / "d", BuildOptions(rows=True, labels_from_dir=True, quiet=True))


def test_labels_of_every_integer_width_are_exact(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    values = {
        "u64.npy": np.array([0, 2**64 - 1, 10**19], dtype=np.uint64),
        "i64.npy": np.array([-(2**63), 2**63 - 1, -1], dtype=np.int64),
        "i8.npy": np.array([-128, 127, 0], dtype=np.int8),
        "flag.npy": np.array([True, False, True]),
    }
    for name, array in values.items():
        np.save(src / name, array)
    build(src, tmp_path / "d", BuildOptions(rows=True, quiet=True))
    dataset = IndexedTarDataset(tmp_path / "d")
    got = {row_of(s["__key__"]): int(s["cls"]) for s in (dataset[i] for i in range(len(dataset)))}
    assert got == {(name, i): int(v) for name, array in values.items() for i, v in enumerate(array)}


@pytest.mark.parametrize("content, message", [
    ({"A": torch.zeros(2), "a": torch.ones(2)}, "differ only in case"),
    ({"": torch.zeros(2)}, "cannot be a member extension"),
    (torch.zeros(0, 3), "holds 0 rows"),
    (torch.eye(3).to_sparse(), "only dense tensors"),
])
def test_more_bad_containers(tmp_path, content, message):
    src = tmp_path / "src"
    src.mkdir()
    torch.save(content, src / "bad.pt")
    with pytest.raises(PackerError, match=message):
        build(src, tmp_path / "d", BuildOptions(rows=True, quiet=True))


def test_tensors_that_require_grad_are_stored(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    weights = torch.arange(6.0).reshape(3, 2).requires_grad_()
    torch.save(weights, src / "w.pt")
    build(src, tmp_path / "d", BuildOptions(rows=True, quiet=True))
    dataset = IndexedTarDataset(tmp_path / "d", decode="default")
    rows = {row_of(s["__key__"])[1]: s["npy"] for s in (dataset[i] for i in range(3))}
    assert all(np.array_equal(rows[i], weights[i].detach().numpy()) for i in range(3))


def test_a_replaced_container_is_not_served_from_the_cache(tmp_path):
    """Two builds in one process: the second must read the new file."""
    import os

    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", np.zeros((4, 2), dtype=np.float32))
    build(src, tmp_path / "first", BuildOptions(rows=True, workers=1, quiet=True))
    np.save(tmp_path / "new.npy", np.ones((4, 2), dtype=np.float32))
    os.replace(tmp_path / "new.npy", src / "a.npy")
    build(src, tmp_path / "second", BuildOptions(rows=True, workers=1, quiet=True))
    dataset = IndexedTarDataset(tmp_path / "second", decode="default")
    assert all(np.array_equal(dataset[i]["npy"], np.ones(2, dtype=np.float32)) for i in range(4))
