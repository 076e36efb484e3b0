"""loaders: PyTorch datasets over tar shards made by ``packer`` (or anyone).

``IndexedTarDataset`` gives map-style random access through the index;
``ShardAwareSampler`` orders it per epoch with shard locality and splits it
evenly across distributed ranks.
"""

from .decode import DecodeError, Decoder
from .dist import rank_and_world_size, worker_id_and_count
from .errors import ShardError
from .indexed import IndexedTarDataset
from .sampler import ShardAwareSampler, epoch_order, rank_slice
from .source import SampleIndex, open_index
from .tarindex import build_tar_index, load_tar_index

__all__ = [
    "IndexedTarDataset", "ShardAwareSampler", "ShardError", "DecodeError", "Decoder",
    "SampleIndex", "open_index", "build_tar_index", "load_tar_index",
    "epoch_order", "rank_slice", "rank_and_world_size", "worker_id_and_count",
]
