"""Progress bars on stderr that vanish with ``--quiet``."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


class _Silent:
    """Stands in for a tqdm bar when progress is off."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


@contextlib.contextmanager
def progress_bar(quiet: bool, **kwargs: Any) -> Iterator[Any]:
    if quiet:
        yield _Silent()
        return
    import tqdm  # imported here: --quiet runs and library use never need it

    tqdm.tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked
    # disable=None: no bar when stderr is not a terminal (CI logs, pipes).
    with tqdm.tqdm(leave=False, dynamic_ncols=True, disable=None, **kwargs) as bar:
        yield bar
