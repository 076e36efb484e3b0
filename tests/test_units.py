import pytest

from packer.units import format_size, parse_size


@pytest.mark.parametrize("text, value", [
    ("256MB", 256_000_000), ("2.01MB", 2_010_000), ("1GiB", 2**30), ("1.5kib", 1536),
    ("500000", 500_000), (" 64 mb ", 64_000_000), ("0.1kB", 100), ("3T", 3 * 10**12),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "MB", "12xb", "-5MB", "0", "1e6"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size():
    assert format_size(256e6) == "256.0 MB" and format_size(999) == "999 B" and format_size(1234) == "1.2 kB"
