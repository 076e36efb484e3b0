"""Loader state for exact mid-epoch resume: a few numbers, checked on load.

Because each epoch has one global order that depends on nothing but the
seed, the epoch and the index (see :mod:`loaders.order`), and the job
consumes it in global batches from the front (see :mod:`loaders.split`),
"where are we" is just ``(epoch, position)``: positions ``0 .. position-1``
of that epoch have been consumed by the whole job.  A restarted job, with
any number of ranks and workers, deals positions ``position ..`` and reads
them straight through the index.  The rest of the state makes sure it is
applied to the same data in the same order: a fingerprint of the index and
the parameters that shape the order.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from .source import SampleIndex

STATE_FORMAT = "packer-loader-state"
STATE_VERSION = 1


class IncompatibleStateError(ValueError):
    """A saved loader state that does not belong to this dataset or order."""


def index_fingerprint(index: SampleIndex) -> str:
    """A short digest of what fixes positions -> samples: shard sizes, samples
    per shard, extensions, and the first and last keys of every shard."""
    digest = hashlib.sha256()
    counts = index.shard_counts()
    digest.update(counts.tobytes())
    digest.update(np.asarray(index.shard_bytes, dtype=np.int64).tobytes())
    digest.update("\0".join(sorted(index.extensions)).encode("utf-8", "surrogateescape"))
    firsts = np.cumsum(counts) - counts
    for first, count in zip(firsts.tolist(), counts.tolist()):
        if count:
            digest.update(index.key(first).encode("utf-8", "surrogateescape"))
            digest.update(index.key(first + count - 1).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def make_state(order: Mapping[str, Any], epoch: int, position: int, num_samples: int, fingerprint: str) -> Dict[str, Any]:
    """The state to save; ``order`` holds the parameters that shape the order."""
    if num_samples > 0 and position >= num_samples:  # the epoch is complete: resume at the next one
        epoch, position = epoch + 1, 0
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "epoch": int(epoch),
        "position": int(position),
        "num_samples": int(num_samples),
        "index": fingerprint,
        "order": dict(order),
    }


def read_state(state: Mapping[str, Any], order: Mapping[str, Any], num_samples: int, fingerprint: str) -> Tuple[int, int]:
    """``(epoch, position)`` of a saved state, after checking that it belongs
    to this dataset and order; raises IncompatibleStateError naming why not."""
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise IncompatibleStateError("not a loader state (expected a dict saved by state_dict())")
    if state.get("version") != STATE_VERSION:
        raise IncompatibleStateError(f"loader state version {state.get('version')!r}; this version reads {STATE_VERSION}")
    if state.get("num_samples") != num_samples or state.get("index") != fingerprint:
        raise IncompatibleStateError(
            f"the loader state was saved for a different dataset ({state.get('num_samples')} samples, index "
            f"{state.get('index')}) than this one ({num_samples} samples, index {fingerprint})"
        )
    saved = dict(state.get("order") or {})
    if saved != dict(order):
        changed = sorted(k for k in set(saved) | set(order) if saved.get(k) != order.get(k))
        details = ", ".join(f"{k}: saved {saved.get(k)!r}, now {order.get(k)!r}" for k in changed)
        raise IncompatibleStateError(f"the loader state was saved with a different order ({details})")
    epoch, position = state.get("epoch"), state.get("position")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, position)):
        raise IncompatibleStateError(f"loader state epoch {epoch!r} / position {position!r} are not integers")
    if epoch < 0 or not 0 <= position <= num_samples:
        raise IncompatibleStateError(f"loader state epoch {epoch} / position {position} out of range")
    return epoch, position
