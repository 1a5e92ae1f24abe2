"""Progress events from the build to whoever shows them.

The pipeline and its stages report *stages* (a titled piece of work that starts, may report
inner progress, and ends with its duration) and nothing else. The base `Reporter` is silent;
the CLI subclasses it to draw a line per finished stage and one live row for the current one.
Stages never nest: a stage that wants finer detail reports inner progress, not sub-stages.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

# (done, total) or (done, total, detail): inner progress of the running stage.
Tick = Callable[..., None]


class Reporter:
    """Silent by default. Subclasses override the `on_*` hooks; callers use `stage`."""

    def on_start(self, title: str) -> None:
        pass

    def on_progress(self, done: int, total: int | None, detail: str = "") -> None:
        pass

    def on_end(self, title: str, seconds: float, ok: bool) -> None:
        pass

    @contextmanager
    def stage(self, title: str) -> Iterator[Tick]:
        """A timed stage; the yielded callable reports inner progress (done, total)."""
        self.on_start(title)
        t0 = time.perf_counter()
        ok = False
        try:
            yield lambda done, total=None, detail="": self.on_progress(done, total, detail)
            ok = True
        finally:
            self.on_end(title, time.perf_counter() - t0, ok)

    def track(self, detail: str) -> Tick:
        """Inner progress of the running stage, labelled (e.g. one distillation epoch loop)."""
        return lambda done, total=None: self.on_progress(done, total, detail)
