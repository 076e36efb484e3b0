"""Exceptions the loaders raise for data that cannot be read as indexed."""


class ShardError(OSError):
    """A shard that is missing, shorter than its index, changed since it was
    indexed, or malformed.  The message names the shard (and the sample or
    byte offset where there is one)."""
