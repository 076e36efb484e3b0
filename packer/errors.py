"""Exceptions the command line maps to exit codes (1: failure, 2: usage)."""


class PackerError(Exception):
    """A failure on real data (unreadable file, bad shard): exit code 1."""

    exit_code = 1


class UsageError(PackerError):
    """Arguments that cannot work (missing SRC, DST not empty): exit code 2."""

    exit_code = 2
