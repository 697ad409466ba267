"""Import the SDK, httpx2 and vcrpy on a background thread while pytest collects.

They take seconds to import and the first request needs them; imported on the main thread
after collection (as :func:`pytest_batchgen.generation.make_dispatcher` does), that time is
spent before anything is sent. Started only in a run that will generate (a plain run or an
xdist controller, not validate-only, not a dry run, with a pending row or record mode
``all``), so a validate-only run still never loads them. The main thread's own import of the
same modules waits on Python's per-module import lock for the one in progress, so nothing is
imported twice; a failing import is left for the main thread to report.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
from collections.abc import Iterable

from .plan import Row
from .run import PlanRun
from .settings import Settings

#: what the dispatcher imports: the recorder first (the main thread needs it to start the
#: dispatcher, and it takes a tenth of the SDK's time), then the SDK (its first request needs it)
MODULES = ("vcr", "pytest_batchgen.client", "pytest_batchgen.recording", "anthropic", "httpx2")

#: what a replay-only run (record mode ``none``) imports: no SDK (see ``recording.ReplayClient``)
REPLAY_MODULES = ("vcr", "pytest_batchgen.recording")


def modules_for(settings: Settings) -> tuple[str, ...]:
    """The modules this run's dispatcher will import."""
    return REPLAY_MODULES if settings.record_mode == "none" else MODULES


def will_generate(settings: Settings, rows: Iterable[tuple[PlanRun, Row]]) -> bool:
    """Whether this process may send requests: worth loading the SDK early."""
    if settings.validate_only or settings.dry_run:
        return False
    return settings.record_mode == "all" or any(not row.complete for _, row in rows)


class Preloader:
    """The background import; :meth:`join` before pytest restores or tears anything down."""

    def __init__(self, modules: tuple[str, ...] = MODULES) -> None:
        self.modules = modules
        self.failed: str | None = None
        self._thread = threading.Thread(target=self._run, name="batchgen-preload", daemon=True)

    def start(self) -> Preloader:
        self._thread.start()
        return self

    def _run(self) -> None:
        fresh = "anthropic" in self.modules and "anthropic" not in sys.modules
        for name in self.modules:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # the main thread imports it again and reports it
                self.failed = f"{name}: {type(exc).__name__}: {exc}"
                return
        if fresh:
            # The SDK's import leaves some 150,000 objects (its types and their pydantic schemas)
            # that live as long as the process. Moved out of the collector's reach, they are not
            # scanned again by every full collection: the automatic ones during the run, and the
            # five pytest's unraisable-exception plugin makes at the end (about 0.3 s).
            # Once per process: only when this thread was the one that imported the SDK.
            gc.freeze()

    def join(self) -> None:
        self._thread.join()
