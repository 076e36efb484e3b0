"""loaders: PyTorch datasets over shards made by ``packer``.

The random-access ``IndexedTarDataset`` and the streaming
``StreamingTarDataset`` read the format defined in :mod:`packer.index`.
"""

from packer.index import PackedIndex

__all__ = ["PackedIndex"]
