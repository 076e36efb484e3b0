"""The naming rule: every written name splits back into its key; paths round-trip."""

import pytest
from hypothesis import given, strategies as st

from packer.names import escape_key, member_name, reader_split, source_path, split_extension, unescape_key


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
def test_any_name_round_trips_through_the_reader_split(dirs, base, rule):
    parts = split_extension(base, rule)
    if parts is None:
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
