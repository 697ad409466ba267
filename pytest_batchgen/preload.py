"""Import the SDK and httpx2 on a background thread while pytest collects.

They take seconds to import and the first request needs them; imported on the main thread
after collection (as :func:`pytest_batchgen.generation.make_dispatcher` does), that time is
spent before anything is sent. Started only in a run that will generate (a plain run or an
xdist controller, not validate-only, not a dry run, with a pending row or record mode
``all``), so a validate-only run still never loads them. The main thread's own import of the
same modules waits on Python's per-module import lock for the one in progress, so nothing is
imported twice; a failing import is left for the main thread to report.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import importlib
import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any

from .plan import Row
from .run import PlanRun
from .settings import Settings

#: what the dispatcher imports before its first request: the client, httpx2 and the transport
#: under it (httpcore2, which httpx2 imports when the client is made; then the TLS context starts
#: on a thread, :func:`tls_context_soon`), the recorder (the main thread needs it to start the
#: dispatcher), then the SDK. Not vcrpy: only a reply to record needs it, and the recorder imports
#: it once the first request's body is on the wire (``recording._load_vcrpy_once_sent``)
MODULES = ("pytest_batchgen.client", "httpx2", "httpcore2", "pytest_batchgen.recording", "anthropic")

#: what a replay-only run (record mode ``none``) imports: neither the SDK nor vcrpy (see
#: ``cassettes.ReplayClient``)
REPLAY_MODULES = ("pytest_batchgen.cassettes",)


def modules_for(settings: Settings) -> tuple[str, ...]:
    """The modules this run's dispatcher will import."""
    return REPLAY_MODULES if settings.record_mode == "none" else MODULES


def will_generate(settings: Settings, rows: Iterable[tuple[PlanRun, Row]]) -> bool:
    """Whether this process may send requests: worth loading the SDK early."""
    if not settings.may_generate:
        return False
    return settings.record_mode == "all" or any(not row.complete for _, row in rows)


class Preloader:
    """The background import; :meth:`join` before pytest restores or tears anything down."""

    def __init__(self, modules: tuple[str, ...] = MODULES) -> None:
        self.modules = modules
        self.failed: str | None = None
        self._thread = threading.Thread(target=self.run_here, name="batchgen-preload", daemon=True)

    def start(self) -> Preloader:
        self._thread.start()
        return self

    def run_here(self) -> None:
        """Import the modules on this thread (the sending process imports them on its own)."""
        # The SDK's import leaves some 150,000 objects (its types and their pydantic schemas) that
        # live as long as the process. The collector's passes while they are made find nothing
        # to free, and cost about a sixth of the import (0.4 s of 2.4 s here): it is paused for
        # the import. Afterwards they are moved out of its reach (``gc.freeze``), so that no full
        # collection scans them again: the automatic ones during the run, and the five pytest's
        # unraisable-exception plugin makes at the end (about 0.3 s).
        # Once per process: only when this thread is the one that imports the SDK.
        fresh = "anthropic" in self.modules and "anthropic" not in sys.modules
        pause = fresh and gc.isenabled()
        if pause:
            gc.disable()
        try:
            for name in self.modules:
                try:
                    importlib.import_module(name)
                except BaseException as exc:  # the main thread imports it again and reports it
                    self.failed = f"{name}: {type(exc).__name__}: {exc}"
                    return
                if name == "httpcore2":
                    tls_context_soon()
        finally:
            if pause:
                gc.enable()
        if fresh:
            gc.freeze()

    def join(self) -> None:
        self._thread.join()


class _LoggerRegistry(dict[str, Any]):
    """``logging``'s registry of loggers, whose ``values()`` is a snapshot.

    pytest (9.2 and later) walks ``logging.Logger.manager.loggerDict.values()`` each time it
    starts capturing logs: the session's start, collection, every setup, call and teardown.
    A module imported on another thread meanwhile (the SDK while pytest collects, vcrpy at the
    first reply, a judge's SDK) registers its loggers, and the walk fails with "dictionary
    changed size during iteration", an INTERNALERROR of the whole run. ``list()`` copies the
    values in C, without letting another thread run, so the snapshot is always whole."""

    def values(self) -> list[Any]:  # type: ignore[override]
        return list(super().values())


def guard_logger_registry() -> None:
    """Make the registry of loggers safe to walk while this plugin's threads import (once)."""
    manager = logging.Logger.manager
    if not isinstance(manager.loggerDict, _LoggerRegistry):
        with _logging_lock():
            manager.loggerDict = _LoggerRegistry(manager.loggerDict)


def _logging_lock() -> Any:
    """The lock ``logging`` registers loggers under (its private ``_lock``; none if a version drops it)."""
    lock = getattr(logging, "_lock", None)
    return lock if lock is not None else contextlib.nullcontext()


_soon: dict[tuple[str, ...], threading.Thread] = {}
_soon_lock = threading.Lock()
#: one import through :func:`import_soon` / :func:`import_now` at a time: two threads importing
#: vcrpy at once both fail (its package's imports are circular, and Python's per-module locks
#: then hand each thread a partly initialised module)
_import_lock = threading.Lock()


def import_soon(modules: tuple[str, ...]) -> None:
    """Import ``modules`` on a thread now, unless they are imported or being imported already
    (vcrpy, once the first request is out: see ``recording.load_vcrpy_soon``). A failure is left
    for :func:`import_now` to report. :func:`join_imports` waits for the thread."""
    with _soon_lock:
        running = _soon.get(modules)
        if (running is not None and running.is_alive()) or all(m in sys.modules for m in modules):
            return
        thread = threading.Thread(target=_import_quietly, args=(modules,), name="batchgen-import", daemon=True)
        _soon[modules] = thread
        thread.start()


def _import_quietly(modules: tuple[str, ...]) -> None:
    try:
        import_now(modules)
    except BaseException:
        return


def import_now(modules: tuple[str, ...]) -> None:
    """Import ``modules`` here, after any :func:`import_soon` of them has finished."""
    with _import_lock:
        for name in modules:
            importlib.import_module(name)


_tls: concurrent.futures.Future[Any] | None = None


def tls_context_soon() -> None:
    """Start making httpx2's default TLS context on a thread (once), while the SDK imports.

    The run's HTTP transport makes one when it is built, after the import and before the first
    request: reading the CA bundle takes about 50 ms, all of it with the interpreter lock
    released, so on a thread it overlaps the import instead. The context is httpx2's own
    (``httpx2.create_ssl_context()``, what the transport would make), handed to the transport
    that :func:`take_tls_context` builds. Started once httpx2 and httpcore2 are imported: the
    thread imports nothing while the SDK's import goes on."""
    global _tls
    with _soon_lock:
        if _tls is not None:
            return
        _tls = concurrent.futures.Future()
        future = _tls

    def make() -> None:
        try:
            future.set_result(sys.modules["httpx2"].create_ssl_context())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=make, name="batchgen-tls", daemon=True).start()


def take_tls_context() -> Any:
    """What to pass as the transport's ``verify``: the context :func:`tls_context_soon` made
    (it waits for it), or True, httpx2's default, to make one now (also when making it failed:
    the transport then fails where it would have).

    One context serves every client of the process (an SSL context is made to be shared): the
    judge's client and the generation client of a run, each run of a process that runs pytest
    more than once (pytester), and a sending process forked after it was made."""
    with _soon_lock:
        future = _tls
    if future is None:
        return True
    try:
        return future.result()
    except Exception:
        return True


def join_imports() -> None:
    """Wait for the imports :func:`import_soon` started: before pytest tears anything down (a
    pytester run restores ``sys.modules``, which must not happen in the middle of an import)."""
    with _soon_lock:
        threads = list(_soon.values())
    for thread in threads:
        thread.join()
