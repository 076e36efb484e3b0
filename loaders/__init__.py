"""loaders: PyTorch datasets over tar shards made by ``packer`` (or anyone).

``IndexedTarDataset`` gives map-style random access through the index;
``ShardAwareSampler`` orders it per epoch with shard locality and splits it
evenly across distributed ranks.  ``StreamingTarDataset`` is a webdataset
pipeline that streams the same shards with exact, equal shares per rank and
worker and a new order every epoch.  Both follow one global order per
epoch (``docs/loading.md``) and resume mid-epoch from ``state_dict()``;
``ResumableLoader`` is the DataLoader that keeps that state.
"""

from .decode import DecodeError, Decoder
from .dist import rank_and_world_size, worker_id_and_count
from .errors import ShardError
from .indexed import IndexedTarDataset
from .order import EpochOrder
from .resumable import ResumableLoader
from .sampler import ShardAwareSampler
from .source import SampleIndex, open_index
from .split import Deal
from .state import IncompatibleStateError
from .streaming import StreamingTarDataset
from .tarindex import build_tar_index, load_tar_index

__all__ = [
    "IndexedTarDataset", "ShardAwareSampler", "StreamingTarDataset", "ResumableLoader",
    "EpochOrder", "Deal", "IncompatibleStateError", "ShardError", "DecodeError", "Decoder",
    "SampleIndex", "open_index", "build_tar_index", "load_tar_index",
    "rank_and_world_size", "worker_id_and_count",
]
