"""How many shards of what size: an instant recommendation from numbers alone.

Pure arithmetic over a dataset profile (sample count and sizes) and a
cluster shape, so it can be tested without I/O and explained line by line.
``scripts/tune_shards.py`` prints it and can measure candidates for real.

The reasoning, each rule a line of the printed reasons:

* **Shard size range by storage.** Local disk or page cache: 64 MB - 1 GB,
  target 256 MB (large enough that opening a shard is noise, small enough
  that a build can resume at a fine grain and shards spread over workers).
  Network file system: 128 MB - 1 GB, target 512 MB (fewer metadata
  operations).  Object store: 256 MB - 2 GB, target 1 GB (each shard is a
  request with tens of milliseconds of latency).
* **Every reader busy.** Readers are nodes x GPUs x DataLoader workers.
  This project's loaders split inside shards, so any count works for them;
  but a plain webdataset pipeline (or any shard-level splitter) needs at
  least one shard per reader and a multiple of the reader count so that
  every reader gets the same number of shards.  The count is therefore
  rounded to a multiple of the readers when that keeps the size within the
  range, and never below the number of readers unless shards would get
  smaller than the range allows.
* **Tar overhead.** Each member costs a 512-byte header plus padding to 512
  bytes (about 256 bytes on average): for tiny samples that overhead, not
  the shard count, dominates the bytes read; the recommendation reports it
  and suggests grouping rows (``--rows``) when it exceeds 25 %.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

MB = 1_000_000

#: (smallest, target, largest) shard bytes per storage kind.
STORAGE_RANGES = {
    "local": (64 * MB, 256 * MB, 1000 * MB),
    "network": (128 * MB, 512 * MB, 1000 * MB),
    "object": (256 * MB, 1000 * MB, 2000 * MB),
}

HEADER_BYTES = 512
MEAN_PADDING = 256


@dataclass(frozen=True)
class Profile:
    """What the dataset looks like: samples, members per sample, payload."""

    samples: int
    payload_bytes: int
    members_per_sample: float = 1.0

    @property
    def tar_bytes(self) -> int:
        """Approximate packed size: payload + header and mean padding per member."""
        members = self.samples * self.members_per_sample
        return int(self.payload_bytes + members * (HEADER_BYTES + MEAN_PADDING) + 1024)

    @property
    def overhead(self) -> float:
        return (self.tar_bytes - self.payload_bytes) / max(self.tar_bytes, 1)


@dataclass(frozen=True)
class Cluster:
    nodes: int = 1
    gpus_per_node: int = 1
    workers: int = 1

    @property
    def ranks(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def readers(self) -> int:
        return self.ranks * max(self.workers, 1)


@dataclass
class Recommendation:
    num_shards: int
    shard_bytes: int
    samples_per_shard: float
    reasons: List[str] = field(default_factory=list)

    @property
    def shard_size_arg(self) -> str:
        """A ``--shard-size`` value that gives about this many shards."""
        return f"{max(-(-self.shard_bytes // MB), 1)}MB"  # an upper bound: round up


def recommend(profile: Profile, cluster: Cluster, storage: str = "local") -> Recommendation:
    """Shard count and size for ``profile`` read by ``cluster`` from ``storage``."""
    if storage not in STORAGE_RANGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGE_RANGES)}, not {storage!r}")
    if profile.samples < 1:
        raise ValueError("the dataset has no samples")
    low, target, high = STORAGE_RANGES[storage]
    total = profile.tar_bytes
    readers = cluster.readers
    reasons = [
        f"dataset: {profile.samples:,} samples, {profile.payload_bytes / MB:,.1f} MB payload, "
        f"about {total / MB:,.1f} MB as tar ({profile.overhead:.1%} headers and padding)",
        f"cluster: {cluster.nodes} node(s) x {cluster.gpus_per_node} GPU(s) x {max(cluster.workers, 1)} "
        f"DataLoader worker(s) = {readers} reader(s)",
        f"{storage} storage: shards of {low // MB}-{high // MB} MB, aiming at {target // MB} MB",
    ]
    count = max(1, round(total / target))
    reasons.append(f"{total / MB:,.0f} MB / {target // MB} MB -> {count} shard(s)")
    if count < readers and total / readers >= low:
        count = readers
        reasons.append(f"raised to {readers}: one shard per reader keeps every reader busy with shard-level splitters")
    elif count < readers:
        reasons.append(
            f"fewer shards than the {readers} readers, because {readers} shards would be under {low // MB} MB; "
            "this project's loaders split inside shards, so every reader stays busy anyway "
            "(a plain webdataset pipeline would leave readers idle)"
        )
    if count >= readers:
        multiple = max(readers, round(count / readers) * readers)
        if multiple != count and low <= total / multiple <= high:
            reasons.append(f"rounded to {multiple}, a multiple of {readers} readers: equal shards per reader")
            count = multiple
    size = total / count
    reasons.append(f"result: {count} shard(s) of about {size / MB:,.0f} MB, {profile.samples / count:,.0f} samples each")
    if profile.overhead > 0.25:
        reasons.append(
            f"tar headers and padding are {profile.overhead:.0%} of the bytes: samples are tiny; consider packing "
            "rows of per-file datasets (--rows) or grouping several small files per sample"
        )
    return Recommendation(count, int(size), profile.samples / count, reasons)
