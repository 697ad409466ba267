"""How the plugin's own items run: pytest's runtest protocol without its per-phase hooks.

pytest runs every item through three phases (setup, call, teardown), and each phase is a hook
that the capture, logging, skipping, thread-exception and unraisable-exception plugins wrap:
capture resumes and suspends its files, logging installs and removes two handlers, three times
an item: 0.62 M of the 2.60 M instructions an item of a validate-only run costs with them
(``benchmarks/bench_item_protocol.py``, pytest 9.0). A row has an item per checklist line: the
pytest process of a generating run spends 2.4 M instructions a row less without them (22%,
``benchmarks/bench_generation_count.py``; issue 12).

An item of ours runs no code of the user's when its check is one of the built-in forms (or it
is a ``generate`` or ``fresh`` item): it prints nothing, logs nothing, and marks nothing skipped.
For such an item this plugin runs the protocol itself, keeping everything a report reader sees:
``pytest_runtest_logstart`` and ``logfinish``, a report per phase made by
``pytest_runtest_makereport`` and logged by ``pytest_runtest_logreport`` (the terminal, JUnit
XML, ``-x``, xdist and the plugin's tally read those; an item's three reports hold one
``keywords`` mapping, equal to the one pytest's protocol makes for each), ``pytest_exception_interact``
on a failure, ``PYTEST_CURRENT_TEST``, the nodes' setup and teardown in pytest's order, and the
wrappers of ``pytest_runtest_protocol`` itself (warnings, faulthandler, timeouts).

It falls back to pytest's own protocol, item by item, whenever that could differ:

- the item's check is a form from a ``conftest.py`` or another plugin (its code may print or
  log, and its output belongs in the report's captured sections);
- the item carries a ``skip``, ``skipif``, ``xfail`` or ``benchmark`` mark (someone added one);
- a plugin or ``conftest.py`` other than pytest's own implements ``pytest_runtest_setup``,
  ``pytest_runtest_call`` or ``pytest_runtest_teardown`` for the plan's directory, or runs
  items its own way (a ``pytest_runtest_protocol`` that is not a wrapper: pytest-rerunfailures,
  for one, reruns failed items from there);
- the run shows or plans fixtures (``--setup-show``, ``--setup-only``, ``--setup-plan``), or
  debugs (``--pdb``, ``--trace``);
- pytest no longer has the setup state this relies on (a later pytest changed its internals).
"""

from __future__ import annotations

import bdb
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pytest

#: the plugins whose per-phase hooks an item of ours can do without: pytest's own (the runner,
#: whose work the lean protocol does itself; capture and logging, which have nothing to catch;
#: skipping, whose marks make an item fall back; the thread and unraisable exception plugins,
#: which report at the next phase of another item or at the session's end), Hypothesis's,
#: whose call wrapper passes items that are not Python functions through untouched, and
#: pytest-benchmark's, whose setup hook only checks the arguments of its own ``benchmark`` mark
#: (installed in many environments, it would otherwise cost every plan item the lean protocol)
KNOWN_PHASE_PLUGINS = frozenset(
    {
        "runner",
        "capturemanager",
        "logging-plugin",
        "skipping",
        "threadexception",
        "unraisableexception",
        "hypothesispytest",
        "benchmark",
    }
)
PHASE_HOOKS = ("pytest_runtest_setup", "pytest_runtest_call", "pytest_runtest_teardown")
#: the plugins that may run an item's whole protocol (not as a wrapper): pytest's runner and this
PROTOCOL_PLUGINS = frozenset({"runner", "batchgen-protocol"})
#: marks that a known plugin's per-phase hooks act on: an item carrying one runs pytest's protocol
FALLBACK_MARKS = frozenset({"skip", "skipif", "xfail", "benchmark"})
#: options under which an item's phases are shown or debugged: pytest's protocol does that
FULL_PROTOCOL_OPTIONS = ("setupshow", "setuponly", "setupplan", "usepdb", "trace")


class ItemProtocol:
    """Runs the plugin's items through the lean protocol when nothing could tell the difference."""

    def __init__(self, config: pytest.Config) -> None:
        self.enabled = not any(config.getoption(name, False) for name in FULL_PROTOCOL_OPTIONS)
        self.reraise: tuple[type[BaseException], ...] = (pytest.exit.Exception, KeyboardInterrupt)
        self._paths: dict[Path, bool] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if not self.enabled or not self.lean(item):
            return None  # pytest's own protocol
        run_lean(item, nextitem, self.reraise)
        return True

    def lean(self, item: pytest.Item) -> bool:
        """Whether ``item`` may skip the per-phase hooks (see the module's docstring)."""
        from .nodes import RowItem

        if not isinstance(item, RowItem) or item.runs_user_code():
            return False
        if getattr(item.session, "_setupstate", None) is None:
            return False
        quiet = self._paths.get(item.path)
        if quiet is None:
            quiet = self._paths[item.path] = only_known_phase_hooks(item)
        return quiet and not any(mark.name in FALLBACK_MARKS for mark in item.iter_markers())


def only_known_phase_hooks(item: pytest.Item) -> bool:
    """Whether every implementation of the per-phase hooks seen from the item's directory
    (conftest files included) is one of :data:`KNOWN_PHASE_PLUGINS`, and no plugin but pytest's
    runner and this one runs the protocol itself (wrappers of it run around the lean one)."""
    pm = item.config.pluginmanager
    ihook = item.ihook
    for name in PHASE_HOOKS:
        for impl in getattr(ihook, name).get_hookimpls():
            if pm.get_name(impl.plugin) not in KNOWN_PHASE_PLUGINS:
                return False
    for impl in ihook.pytest_runtest_protocol.get_hookimpls():
        if not (impl.hookwrapper or impl.wrapper) and pm.get_name(impl.plugin) not in PROTOCOL_PLUGINS:
            return False
    return True


def run_lean(item: pytest.Item, nextitem: pytest.Item | None, reraise: tuple[type[BaseException], ...]) -> None:
    """pytest's ``runtestprotocol`` for an item that runs no code of the user's: the same
    reports, in the same order, through the same report hooks, without the phase hooks."""
    ihook = item.ihook
    session = item.session
    setup_state = session._setupstate  # what pytest_runtest_setup and _teardown drive
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)

    def setup() -> None:
        _current_test(item, "setup")
        setup_state.setup(item)

    def teardown() -> None:
        _current_test(item, "teardown")
        # the session is about to stop: tear everything down, as pytest does (its #11706)
        setup_state.teardown_exact(None if session.shouldfail or session.shouldstop else nextitem)
        _current_test(item, None)

    first = _phase(ihook, item, "setup", setup, reraise)
    if first.passed:
        _phase(ihook, item, "call", lambda: _call(item), reraise, first.keywords)
    _phase(ihook, item, "teardown", teardown, reraise, first.keywords)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _phase(
    ihook: Any,
    item: pytest.Item,
    when: Literal["setup", "call", "teardown"],
    func: Callable[[], None],
    reraise: tuple[type[BaseException], ...],
    keywords: Mapping[str, Any] | None = None,
) -> pytest.TestReport:
    call = pytest.CallInfo.from_call(func, when=when, reraise=reraise)
    report: pytest.TestReport = ihook.pytest_runtest_makereport(item=item, call=call)
    if keywords is not None and report.keywords == keywords:
        # pytest copies the item's keyword names into each of its three reports, and the terminal
        # keeps every report to the session's end: one mapping an item was 21 MB less of a
        # 40,000-item run's 296 MB peak (issue 12, registration at scale). Shared only while the
        # names are the same; pytest types it as a read-only Mapping.
        report.keywords = keywords
    ihook.pytest_runtest_logreport(report=report)
    if (
        call.excinfo is not None
        and not hasattr(report, "wasxfail")
        and not isinstance(call.excinfo.value, pytest.skip.Exception | bdb.BdbQuit)
    ):
        ihook.pytest_exception_interact(node=item, call=call, report=report)
    return report


_LAST = ("last_type", "last_value", "last_traceback", "last_exc")


def _call(item: pytest.Item) -> None:
    """The call phase: ``item.runtest()``, leaving ``sys.last_*`` for a post-mortem as pytest does."""
    _current_test(item, "call")
    for name in _LAST:
        if hasattr(sys, name):
            delattr(sys, name)
    try:
        item.runtest()
    except Exception as exc:
        sys.last_type, sys.last_value = type(exc), exc
        if sys.version_info >= (3, 12):
            sys.last_exc = exc
        sys.last_traceback = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        raise


def _current_test(item: pytest.Item, when: str | None) -> None:
    """``PYTEST_CURRENT_TEST``, as pytest keeps it (what a hung run's process shows)."""
    if when is None:
        os.environ.pop("PYTEST_CURRENT_TEST", None)
    else:
        os.environ["PYTEST_CURRENT_TEST"] = f"{item.nodeid} ({when})".replace("\x00", "(null)")
