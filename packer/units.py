"""Byte sizes as people write them (``256MB``, ``1.5GiB``) and back."""

from __future__ import annotations

import re
from fractions import Fraction

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """``"256MB"`` -> 256000000; decimal (kB, MB, GB) and binary (KiB, MiB,
    GiB) units, case-insensitive; a bare number is bytes."""
    match = _SIZE_RE.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 256MB, 1GiB, 500000)")
    value = int(Fraction(match.group(1)) * _UNITS[unit])  # exact: "2.01MB" is 2010000
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def format_size(num_bytes: float) -> str:
    """Human-readable decimal size: ``format_size(256e6) == "256.0 MB"``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(num_bytes) < 1000 or unit == "TB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    raise AssertionError("unreachable")
