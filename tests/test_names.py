"""The naming rule: every written name splits back into its key; paths round-trip."""

import pytest
from hypothesis import example, given, strategies as st

from packer.names import escape_key, extension_problem, member_name, reader_split, source_path, split_extension, unescape_key


@pytest.mark.parametrize(
    "basename, rule, expected",
    [
        ("IMG_1.v2.jpg", "last-dot", ("IMG_1.v2", "jpg")),
        ("IMG_1.v2.jpg", "first-dot", ("IMG_1", "v2.jpg")),
        ("x.seg.png", "first-dot", ("x", "seg.png")),
        ("a.jpg", "last-dot", ("a", "jpg")),
        (".bashrc", "last-dot", None),
        (".hidden.txt", "last-dot", (".hidden", "txt")),
        ("..x.y.z", "first-dot", ("..x", "y.z")),
        ("README", "last-dot", None),
        ("trailing.", "last-dot", None),
        ("with space.JPG", "last-dot", ("with space", "JPG")),
    ],
)
def test_split_extension(basename, rule, expected):
    assert split_extension(basename, rule) == expected


def test_split_extension_rejects_unknown_rule():
    with pytest.raises(ValueError, match="unknown key rule"):
        split_extension("a.b", "middle-dot")


@pytest.mark.parametrize(
    "stem, key",
    [
        ("IMG_1.v2", "IMG_1%2Ev2"),
        ("dir.with.dots/x.y", "dir.with.dots/x%2Ey"),
        ("100%", "100%25"),
        ("%2E", "%252E"),
        ("__pycache__/mod", "%5F_pycache__/mod"),
        ("__init__", "%5F_init__"),
        ("__a.b__", "%5F_a%2Eb__"),
        ("__only", "%5F_only"),
        ("a\nb.c/x", "a%0Ab.c/x"),
        ("a/__x__/b", "a/__x__/b"),
        (".hidden", "%2Ehidden"),
        ("ünï/ç", "ünï/ç"),
    ],
)
def test_escape_key_examples(stem, key):
    assert escape_key(stem) == key
    assert unescape_key(key) == stem


path_component = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12
).filter(lambda s: s not in (".", ".."))


@given(dirs=st.lists(path_component, max_size=3), base=path_component, rule=st.sampled_from(["last-dot", "first-dot"]))
@example(dirs=[], base="__a.b__", rule="last-dot")
@example(dirs=[], base="__x.tar.gz__", rule="first-dot")
@example(dirs=["a\nb.c"], base="x.txt", rule="last-dot")
@example(dirs=["__pycache__"], base="m.pyc", rule="last-dot")
@example(dirs=[], base="100%2E.txt", rule="last-dot")
def test_any_name_round_trips_through_the_reader_split(dirs, base, rule):
    parts = split_extension(base, rule)
    if parts is None or extension_problem(parts[1]):
        return
    stem, ext = parts
    relative_stem = "/".join(dirs + [stem])
    key = escape_key(relative_stem)
    name = member_name(key, ext)
    # WebDataset's reader must split the name into exactly our key and extension.
    assert reader_split(name) == (key, ext)
    # webdataset skips names matching this pattern as metadata; ours never do.
    import re

    assert not re.match(r"__[^/]*__($|/)", name)
    assert source_path(key, ext) == "/".join(dirs + [base])


def test_reader_split_matches_webdataset():
    from webdataset.tariterators import base_plus_ext

    for name in ["a/b.c/d%2Ee.jpg", "x.tar.gz", "dir/.hidden", "noext", "a b/ü.json"]:
        assert reader_split(name) == base_plus_ext(name)


@pytest.mark.parametrize("ext, bad", [("jpg", False), ("seg.png", False), ("__key__", True), ("__url__", True), ("a\nb", True)])
def test_extension_problem(ext, bad):
    assert (extension_problem(ext) is not None) == bad


def test_webdataset_yields_every_awkward_name(tmp_path):
    """The real reader, end to end, on names that readers mishandle."""
    import webdataset as wds

    from packer import BuildOptions, build

    names = ["__a.b__", "__x.tar.gz__", "a\nb.c/x.txt", "__pycache__/m.pyc", "100%2E.txt", "-rf.txt", "back\\slash.txt",
             "tab\tname.txt", "IMG_1.v2.jpg", "ünï/名前.json", "L" * 150 + ".bin"]
    for name in names:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    build(tmp_path / "src", tmp_path / "dst", BuildOptions(quiet=True))
    seen = {}
    for sample in wds.WebDataset(str(tmp_path / "dst" / "shard-000000.tar"), shardshuffle=False):
        for ext, value in sample.items():
            if not ext.startswith("__"):
                seen[source_path(sample["__key__"], ext)] = value
    assert seen == {name: name.encode() for name in names}
