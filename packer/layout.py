"""Pure: where every sample and member lies inside its shard.

Given the samples in archive order and the shard boundaries, byte offsets
follow from the member header sizes and data sizes alone, so the index is
computed, never measured, and the writer checks its output against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plan import ARCHIVE_TRAILER
from .table import SampleTable


@dataclass(frozen=True)
class Layout:
    sample_shard: np.ndarray  # uint32[N]
    sample_offset: np.ndarray  # uint64[N]: first header byte of the sample
    member_offset: np.ndarray  # uint64[M]: first data byte of the member
    shard_bytes: np.ndarray  # uint64[S]: file size, end-of-archive included


def compute_layout(table: SampleTable, bounds: np.ndarray) -> Layout:
    """Offsets of every sample and member for shards ``bounds`` (sample ids)."""
    bounds = np.asarray(bounds, dtype=np.int64)
    num_shards = len(bounds) - 1
    spans = table.member_spans()
    start = np.zeros(table.num_members + 1, dtype=np.uint64)
    np.cumsum(spans, out=start[1:])
    sample_members = table.sample_members.astype(np.int64)
    shard_first_member = sample_members[bounds]  # length S + 1
    shard_base = start[shard_first_member]
    members_per_shard = np.diff(shard_first_member)
    member_shard = np.repeat(np.arange(num_shards), members_per_shard)
    header = table.member_header_size.astype(np.uint64)
    member_offset = start[:-1] - shard_base[:-1][member_shard] + header
    sample_shard = np.repeat(np.arange(num_shards, dtype=np.uint32), np.diff(bounds))
    first = sample_members[:-1]
    if table.num_members:
        sample_offset = member_offset[np.minimum(first, table.num_members - 1)] - header[np.minimum(first, table.num_members - 1)]
    else:
        sample_offset = np.zeros(table.num_samples, dtype=np.uint64)
    shard_bytes = np.diff(shard_base) + np.uint64(ARCHIVE_TRAILER)
    return Layout(
        sample_shard=sample_shard,
        sample_offset=sample_offset.astype(np.uint64),
        member_offset=member_offset.astype(np.uint64),
        shard_bytes=shard_bytes.astype(np.uint64),
    )
