"""StreamingTarDataset: a webdataset pipeline with exact, balanced splitting.

The dataset is a ``webdataset.DataPipeline`` whose first stage reads samples
through the index instead of parsing tar headers: users chain webdataset's
stages (``.map``, ``.to_tuple``, ``.batched``, ...) and pass it to a plain
``torch.utils.data.DataLoader`` or ``webdataset.WebLoader``.

What happens on ``iter(dataset)`` (in each DataLoader worker):

1. the epoch's global order is computed from ``(seed, epoch)`` and the
   number of samples per shard (:mod:`loaders.order`: shuffled chunks of
   consecutive samples, mixed in windows of about ``shuffle_buffer``);
2. this rank's and this worker's contiguous part of it is computed
   (:mod:`loaders.split`: equal shares per rank by padding or dropping);
3. the part is read window by window with a few large ``pread`` calls
   (:mod:`loaders.rangeread`) and decoded.

Shards that have no index and cannot get one (``pipe:`` commands, URLs)
are streamed through webdataset's own tar reader with whole shards split
across ranks and workers; a warning says that counts then differ by rank.
"""

from __future__ import annotations

import copy
import os
import random
import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple

import webdataset as wds
from webdataset import filters
from webdataset.compat import FluidInterface

from .decode import DecodeSpec, Decoder
from .dist import rank_and_world_size, worker_id_and_count
from .order import EpochOrder, default_chunk_samples
from .rangeread import RangeReader, StopReading
from .heap import keep_freed_heap
from .shardfiles import ShardFiles, verified_hashes
from .source import SampleIndex, Source, expand_source, is_remote, open_index
from .split import Deal, dealt_samples
from .state import index_fingerprint, make_state, read_state

Handler = Callable[[BaseException], bool]



def _worker_info():
    from torch.utils.data import get_worker_info

    return get_worker_info()


class _Topology:
    """Rank and world size, found in the process that builds the loader.

    DataLoader workers are separate processes in which torch.distributed is
    not initialized, so the values are resolved in the main process (at
    construction, ``set_epoch`` and ``len``) and carried to the workers.
    """

    def __init__(self, rank: Optional[int], world_size: Optional[int]) -> None:
        self.given = (rank, world_size)
        self.resolved = rank_and_world_size(rank, world_size)

    def current(self) -> Tuple[int, int]:
        if _worker_info() is None:
            self.resolved = rank_and_world_size(*self.given)
        return self.resolved


class _IndexedSource:
    """First pipeline stage: this worker's samples of the current epoch."""

    def __init__(self, source: Source, shuffle: bool, seed: int, window: int, chunk: int,
                 drop_last: bool, topology: _Topology, cache_dir: Optional[str], handler: Handler,
                 verify: bool = False) -> None:
        self.source = source
        self.shuffle = shuffle
        self.seed = seed
        self.window = window
        self.chunk = chunk
        self.drop_last = drop_last
        self.topology = topology
        self.cache_dir = cache_dir
        self.handler = handler
        self.verify = verify
        self.skipped_tars: Set[str] = set()  # tars the handler left out; travels to workers
        self.epoch = 0  # the epoch of the next iteration
        self.start = 0  # its first position (non-zero when resuming)
        self.unit = 1  # the per-rank batch size when the pipeline batches
        self.fingerprint: Optional[str] = None
        self._open()

    def _open(self) -> None:
        self._index: Optional[SampleIndex] = open_index(self.source, self.cache_dir, skip_tar=self._skip_tar)
        self._shard_counts = self._index.shard_counts()
        keep_freed_heap()
        self._files = ShardFiles(self._index.shard_paths, self._index.shard_bytes, verified_hashes(self._index, self.verify))
        self._reader = RangeReader(self._index, self._files)
        self._order: Optional[EpochOrder] = None

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_index", "_shard_counts", "_files", "_reader", "_order"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index = None  # reopened on first use in this process

    @property
    def index(self) -> SampleIndex:
        if self._index is None:
            self._open()
        return self._index

    @property
    def num_samples(self) -> int:
        return self.index.num_samples

    def order(self, epoch: int) -> EpochOrder:
        if self._order is None or self._order.epoch != epoch:
            self._order = EpochOrder.build(
                self._shard_counts, self.seed, epoch, self.shuffle, chunk_samples=self.chunk, window_samples=self.window
            )
        return self._order

    def deal(self, world_size: int) -> Deal:
        """How the positions of the next iteration are dealt."""
        return Deal(self.num_samples, world_size, self.unit, self.drop_last, self.start)

    def __call__(self) -> Iterator[Dict[str, Any]]:
        self.index  # opened in this process
        rank, world_size = self.topology.current()
        worker, workers = worker_id_and_count()
        deal = self.deal(world_size)
        reader = self._reader
        try:
            for samples in dealt_samples(deal, self.order(self.epoch), rank, worker, workers):
                yield from reader.read(samples, self._skip)
        except StopReading:
            return

    def _skip_tar(self, path: str, exc: BaseException) -> bool:
        """A tar that cannot be indexed: the handler decides once, where the
        dataset is built; processes that reopen it (DataLoader workers) skip
        the same tars without asking again, so every share stays equal."""
        if path in self.skipped_tars:
            return True
        if self.handler(exc):
            self.skipped_tars.add(path)
            return True
        return False

    def _skip(self, exc: BaseException) -> bool:
        """The user's handler decides: skip (True), end the epoch, or raise."""
        if self.handler(exc):
            return True
        raise StopReading() from exc

    def close(self) -> None:
        files = self.__dict__.get("_files")
        if files is not None:
            files.close()


class _ShardListSource:
    """First stage for shards without an index: whole shards per worker,
    read by webdataset's tar reader, mixed by a seeded shuffle buffer."""

    def __init__(self, urls: List[str], shuffle: bool, seed: int, shuffle_buffer: int,
                 topology: _Topology, handler: Handler) -> None:
        self.urls = urls
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.topology = topology
        self.handler = handler
        self.epoch = 0
        self.start = 0
        self.unit = 1

    def __call__(self) -> Iterator[Dict[str, Any]]:
        epoch = self.epoch
        rank, world_size = self.topology.current()
        worker, workers = worker_id_and_count()
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}:shards").shuffle(urls)
        mine = urls[rank::world_size][worker::workers]
        samples = wds.tarfile_to_samples(handler=self.handler)(iter([{"url": u} for u in mine]))
        if self.shuffle and self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}:{epoch}:{rank}:{worker}")
            samples = filters._shuffle(samples, self.shuffle_buffer, min(self.shuffle_buffer, 100), rng=rng)
        return samples


class StreamingTarDataset(wds.DataPipeline, FluidInterface):
    """Stream the samples of tar shards: exact equal shares per rank, a new
    order every epoch, ``len()`` that is true.

    Parameters
    ----------
    source:
        A dataset directory made by ``python -m packer build``, or local tar
        files written by anything (a path, list, glob or brace pattern;
        indexed once from their headers, the index cached).  ``pipe:``
        commands and URLs are streamed without an index (see below).
    shuffle:
        Visit chunks of the shards in a new random order every epoch and mix
        the samples of each window.  ``False`` streams in stored order.
    shuffle_buffer:
        Samples per window (about): each window gathers ``order.CHUNKS_PER_WINDOW``
        (8) chunks from across the shards, and its samples are yielded in a
        random order.  A worker holds one window's raw bytes at a time.
    chunk_samples:
        Consecutive samples read as one piece; default ``shuffle_buffer / 8``.
    seed:
        With the epoch, fixes the order completely.
    decode, transform:
        As for :class:`loaders.IndexedTarDataset` (shared decoders).
    drop_last:
        ``False`` (default) pads: every sample is seen and up to
        ``world_size - 1`` extra samples (the epoch's first) are read.
        ``True`` drops up to ``world_size - 1`` samples instead.
    rank, world_size:
        Default: torch.distributed, else ``RANK``/``WORLD_SIZE``, else 0, 1.
    handler:
        Called with an exception from reading or decoding, like webdataset's
        ``handler=``: return ``True`` to skip and go on (the rank then yields
        fewer samples than ``len`` says), ``False`` to end the epoch of this
        worker, or raise.  Default: raise.  A tar that cannot be indexed
        (missing, truncated, corrupt) is passed to it when the dataset is built:
        ``True`` leaves that tar out (no samples, on every rank alike, so
        shares stay equal); anything else raises.
    cache_dir:
        Where tar indexes are cached when the tars' directory is read-only.
    verify:
        As for :class:`loaders.IndexedTarDataset`: check every shard's
        SHA-256 at its first use in each process (packed datasets only).

    Samples are ``{"__key__", "__url__", "__index__", "<ext>": value}`` dicts
    (``__index__`` is the sample's number in the index).
    """

    def __init__(
        self,
        source: Source,
        *,
        shuffle: bool = True,
        shuffle_buffer: int = 1024,
        chunk_samples: Optional[int] = None,
        seed: int = 0,
        decode: DecodeSpec = None,
        transform: Optional[Callable[[Dict[str, Any]], Any]] = None,
        drop_last: bool = False,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        handler: Handler = filters.reraise_exception,
        cache_dir: Optional[os.PathLike | str] = None,
        verify: bool = False,
    ) -> None:
        super().__init__()
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be at least 1, not {shuffle_buffer}")
        chunk = chunk_samples if chunk_samples is not None else default_chunk_samples(shuffle_buffer)
        if chunk < 1:
            raise ValueError(f"chunk_samples must be at least 1, not {chunk}")
        topology = _Topology(rank, world_size)
        self._batch: Optional[Tuple[int, bool]] = None
        urls = None if _is_dataset_dir(source) else expand_source(source)
        if urls is not None and any(is_remote(u) for u in urls):
            warnings.warn(
                f"{len(urls)} shards without an index (pipe: or URL): whole shards are split across "
                f"{topology.resolved[1]} rank(s) and the DataLoader workers, so ranks may yield different "
                "numbers of samples (which can stall DDP) and len() is unknown. Pack the data with "
                "'python -m packer build' or read local tar files to get exact, equal shares.",
                stacklevel=2,
            )
            self._source: Any = _ShardListSource(urls, shuffle, seed, shuffle_buffer, topology, handler)
        else:
            self._source = _IndexedSource(
                urls if urls is not None else source, shuffle, seed, shuffle_buffer, chunk, drop_last, topology,
                None if cache_dir is None else os.fspath(cache_dir), handler, verify,
            )
        self.append(self._source)
        decoder = Decoder(decode)
        if decoder.active:
            self.append(filters.map(decoder, handler=handler))
        if transform is not None:
            self.append(filters.map(transform, handler=handler))

    # ---------------------------------------------------------------- epochs

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._source.epoch

    @property
    def start(self) -> int:
        """The first position of the next iteration (non-zero after resuming)."""
        return self._source.start

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order, from its start, for the next iteration.

        Each complete iteration moves on to the next epoch by itself, in the
        process that iterates.  DataLoader workers that are not persistent
        start every epoch from the main process's copy, so there call
        ``set_epoch`` before each epoch, or use :class:`loaders.ResumableLoader`.
        """
        self._source.epoch = int(epoch)
        self._source.start = 0
        self._progress = None
        self._source.topology.current()

    def __iter__(self) -> Iterator[Any]:
        source = self._source
        progress = self._progress = {"epoch": source.epoch, "start": source.start, "units": 0, "done": False}
        for item in super().__iter__():
            progress["units"] += 1
            yield item
        progress["done"] = True
        source.epoch, source.start = progress["epoch"] + 1, 0

    # ---------------------------------------------------------------- resume

    def _indexed(self, what: str) -> "_IndexedSource":
        if not isinstance(self._source, _IndexedSource):
            raise TypeError(f"{what} needs an index; shards streamed without one (pipe: or URLs) have none")
        return self._source

    def _order_params(self) -> Dict[str, Any]:
        source = self._indexed("resuming")
        return {"seed": source.seed, "shuffle": source.shuffle, "chunk_samples": source.chunk, "window_samples": source.window}

    def state_for(self, epoch: int, start: int, consumed: int) -> Dict[str, Any]:
        """The state after this rank's training loop consumed ``consumed``
        samples of the iteration that began at ``(epoch, start)`` (every rank
        having consumed as many: the job is in step)."""
        source = self._indexed("state_dict()")
        _, world_size = source.topology.current()
        deal = Deal(source.num_samples, world_size, source.unit, source.drop_last, start)
        return make_state(self._order_params(), epoch, deal.position_after(consumed), source.num_samples, self._fingerprint())

    def state_dict(self) -> Dict[str, Any]:
        """Where the job is in its epochs, to save in a checkpoint.

        Counts what this process's iteration has yielded, which is what the
        training loop consumed when the dataset is iterated in this process
        (no DataLoader workers).  With workers, use
        :class:`loaders.ResumableLoader`, which counts the batches it hands out.
        """
        source = self._indexed("state_dict()")
        progress = getattr(self, "_progress", None)
        if progress is None:
            return self.state_for(source.epoch, source.start, 0)
        if progress["done"]:
            return self.state_for(progress["epoch"] + 1, 0, 0)
        per_unit = self._batch[0] if self._batch is not None else 1
        return self.state_for(progress["epoch"], progress["start"], progress["units"] * per_unit)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved state: the next iteration yields this rank's
        share of the positions not yet consumed, with this job's world size."""
        source = self._indexed("load_state_dict()")
        epoch, position = read_state(state, self._order_params(), source.num_samples, self._fingerprint())
        source.epoch, source.start = epoch, position
        self._progress = None
        source.topology.current()

    def _fingerprint(self) -> str:
        source = self._indexed("resuming")
        if source.fingerprint is None:
            source.fingerprint = index_fingerprint(source.index)
        return source.fingerprint

    # ---------------------------------------------------------------- length

    @property
    def index(self) -> Optional[SampleIndex]:
        """The sample index, or None for shards streamed without one."""
        return self._source.index if isinstance(self._source, _IndexedSource) else None

    def __len__(self) -> int:
        """Samples (or batches, after ``.batched``) this rank yields in the
        next iteration (a whole epoch, or what is left of a resumed one)."""
        if not isinstance(self._source, _IndexedSource):
            raise TypeError("len() is unknown for shards streamed without an index (pipe: or URLs)")
        _, world_size = self._source.topology.current()
        deal = self._source.deal(world_size)
        if self._batch is None:
            return deal.rank_share
        return deal.rank_batches(self._batch[1])

    # ------------------------------------------------------- pipeline stages

    def compose(self, *stages: Any) -> "StreamingTarDataset":
        # Each pipeline variant gets its own first stage, so that batching
        # one variant does not change how another splits its work.
        result = super().compose(*stages)
        result._source = copy.copy(self._source)
        result.pipeline[0] = result._source
        return result

    def batched(self, batchsize: int, collation_fn: Any = filters.default_collation_fn, partial: bool = True) -> "StreamingTarDataset":
        """Batches of ``batchsize`` made in each worker; workers' shares are
        cut in whole batches so only a rank's last batch can be partial and
        ``len()`` counts batches."""
        if self._batch is not None:
            raise ValueError("this pipeline is already batched")
        result = super().batched(batchsize, collation_fn=collation_fn, partial=partial)
        result._batch = (int(batchsize), bool(partial))
        result._source.unit = int(batchsize)
        return result

    def listed(self, batchsize: int, partial: bool = True) -> "StreamingTarDataset":
        """Lists of ``batchsize`` samples (no collation), counted like batches."""
        return self.batched(batchsize, collation_fn=None, partial=partial)

    def unbatched(self) -> "StreamingTarDataset":
        result = super().unbatched()
        result._batch = None
        result._source.unit = 1
        return result

    def close(self) -> None:
        """Close the shard descriptors this process opened."""
        close = getattr(self._source, "close", None)
        if close is not None:
            close()


def _is_dataset_dir(source: Source) -> bool:
    return isinstance(source, (str, os.PathLike)) and os.path.isdir(source)
