"""Exceptions the loaders raise for data that cannot be read as indexed."""


class ShardError(OSError):
    """A shard that is missing, shorter than its index, of another size than
    when it was indexed, or malformed.  The message names the shard (and the
    sample or byte offset where there is one).  ``whole_shard`` is True when
    the shard cannot be used at all (it could not be opened or has the wrong
    size), so that a reader skipping errors can skip the rest of it at once."""

    shard: int = -1
    whole_shard: bool = False
