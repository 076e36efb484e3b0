"""Small synthetic source trees: the built-in example, test data, benchmarks.

``python -m packer.examples DIR`` writes an ImageFolder-style tree of real
JPEG images with a JSON label file beside each, plus a few awkward names
(dots in the stem, spaces, unicode, a 120-character name) that the naming
rule must round-trip.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
from pathlib import Path
from typing import Optional, Sequence

AWKWARD_STEMS = ("IMG_1.v2", "with space", "ünïcødé", "x" * 120, "100%")


def jpeg_bytes(rng: random.Random, side: int, quality: int = 90) -> bytes:
    """A real, decodable JPEG of ``side`` x ``side`` pixels of noise.

    Noise barely compresses, so ``side`` sets the file size: about 64 ->
    4 kB, 128 -> 15 kB, 208 -> 39 kB at quality 90 (Pillow 13).
    """
    from PIL import Image

    pixels = bytes(rng.getrandbits(8) for _ in range(side * side * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def make_image_tree(
    root: os.PathLike | str,
    *,
    classes: int = 10,
    per_class: int = 50,
    side: int = 64,
    seed: int = 0,
    awkward: bool = True,
    distinct_images: int = 64,
) -> int:
    """Write ``classes`` folders of ``per_class`` JPEG+JSON samples; returns the
    number of samples.  Only ``distinct_images`` different images are drawn
    (reused round-robin) so that large trees are quick to make."""
    rng = random.Random(seed)
    root = Path(root)
    images = [jpeg_bytes(rng, side) for _ in range(min(distinct_images, classes * per_class))]
    count = 0
    for c in range(classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        stems = [f"{i:06d}" for i in range(per_class)]
        if awkward and c == 0:
            stems[: len(AWKWARD_STEMS)] = AWKWARD_STEMS[: per_class]
        for i, stem in enumerate(stems):
            (folder / f"{stem}.jpg").write_bytes(images[count % len(images)])
            (folder / f"{stem}.json").write_text(json.dumps({"label": c, "index": i}))
            count += 1
    return count


def make_blob_tree(root: os.PathLike | str, *, count: int, size: int, per_dir: int = 1000, seed: int = 0) -> int:
    """``count`` single-file samples of ``size`` random bytes, ``per_dir`` per folder."""
    rng = random.Random(seed)
    root = Path(root)
    blob = rng.randbytes(size * 16)
    for i in range(count):
        folder = root / f"{i // per_dir:05d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        start = (i * 7919) % (len(blob) - size + 1)
        (folder / f"{i:08d}.bin").write_bytes(blob[start : start + size])
    return count


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m packer.examples", description=__doc__.splitlines()[0])
    parser.add_argument("dst", metavar="DIR", help="directory to create the example tree in")
    parser.add_argument("--classes", type=int, default=10, help="number of class folders (default: 10)")
    parser.add_argument("--per-class", type=int, default=50, help="samples per class (default: 50)")
    parser.add_argument("--side", type=int, default=64, help="image side in pixels; 208 gives ~40 kB JPEGs (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    n = make_image_tree(args.dst, classes=args.classes, per_class=args.per_class, side=args.side, seed=args.seed)
    print(f"made {n} JPEG+JSON samples in {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
