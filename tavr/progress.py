"""Progress bars that suit where their output goes.

On a terminal: tqdm's live bar. Anywhere else (DVC's and kfp's logs, a pod's stderr, a file) tqdm
redraws the bar with carriage returns, which a log keeps as thousands of updates on one line; there
`bar` prints a plain line at most every `LOG_INTERVAL_S` seconds, and a last one when it closes.
"""

from __future__ import annotations

import sys
from typing import IO, Iterable

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0
LOG_FORMAT = "{l_bar}{n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"  # the bar's blocks say nothing in a log


class _Lines:
    """A file for tqdm that writes each redraw as one line of its own (no carriage returns)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream: IO[str]) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def bar(iterable: Iterable | None = None, *, file: IO[str] | None = None, interval: float = LOG_INTERVAL_S, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)` writing to `file` (default stderr); one line per `interval` seconds
    when `file` is not a terminal."""
    stream = sys.stderr if file is None else file
    if is_terminal(stream):
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    return tqdm(iterable, file=_Lines(stream), mininterval=interval, maxinterval=max(interval, 10.0), bar_format=LOG_FORMAT, **kwargs)
