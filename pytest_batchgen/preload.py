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

import importlib
import threading
from collections.abc import Iterable

from .plan import Row
from .run import PlanRun
from .settings import Settings

#: what the dispatcher imports, heaviest first
MODULES = ("anthropic", "httpx2", "vcr", "pytest_batchgen.client", "pytest_batchgen.recording")

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
        for name in self.modules:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # the main thread imports it again and reports it
                self.failed = f"{name}: {type(exc).__name__}: {exc}"
                return

    def join(self) -> None:
        self._thread.join()
