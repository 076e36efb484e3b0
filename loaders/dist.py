"""Where am I: distributed rank/world size and DataLoader worker.

Order of precedence for rank and world size: explicit arguments, then an
initialized ``torch.distributed`` process group, then the ``RANK`` and
``WORLD_SIZE`` environment variables that ``torchrun`` sets, then a single
process.  The environment fallback also makes splitting testable without
starting process groups.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple


def rank_and_world_size(rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[int, int]:
    """(rank, world_size) of this process; raises ValueError on nonsense."""
    if rank is None or world_size is None:
        found_rank, found_world = _from_torch() or _from_env() or (0, 1)
        rank = found_rank if rank is None else rank
        world_size = found_world if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not within world size {world_size}")
    return rank, world_size


def _from_torch() -> Optional[Tuple[int, int]]:
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _from_env() -> Optional[Tuple[int, int]]:
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise ValueError(
            f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} are not integers"
        ) from None


def worker_id_and_count() -> Tuple[int, int]:
    """(worker id, number of workers) inside a DataLoader worker, else (0, 1)."""
    try:
        from torch.utils.data import get_worker_info
    except ImportError:
        return 0, 1
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)
