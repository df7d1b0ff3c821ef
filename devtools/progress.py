"""Live progress for long dev-tool runs (`smeledger load`, `make bench`): a rich progress bar when stderr
is a terminal, one JSON line every `every` seconds otherwise (CI logs, pipes), or nothing.

Rule: progress goes to stderr only (stdout carries the result), is rate-limited, and never fails the run:
it only formats numbers it is given.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

MODES = ("auto", "bar", "json", "none")


class Reporter:
    def __init__(self, what: str, total: float, mode: str = "auto", *, every: float = 2.0,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "json"
        self.mode, self.what, self.total, self.every = mode, what, total, every
        self._last = 0.0
        self._t0 = time.monotonic()
        self._bar: Progress | None = None
        if mode == "bar":
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), console=Console(file=self.stream), transient=False)
            self._task = self._bar.add_task(what, total=total, info="")
            self._bar.start()

    def update(self, done: float, **fields: Any) -> None:
        """Report `done` out of `total` with named figures; JSON lines at most every `every` seconds."""
        if self._bar is not None:
            info = "  ".join(f"{k} {v}" for k, v in fields.items() if v is not None)
            self._bar.update(self._task, completed=min(done, self.total), info=info)
            return
        now = time.monotonic()
        if self.mode != "json" or now - self._last < self.every:
            return
        self._last = now
        doc = {"event": "progress", "what": self.what, "elapsed_s": round(now - self._t0, 1),
               "done": round(done, 2), "total": self.total, **fields}
        print(json.dumps(doc), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
