"""Fixtures shared by the test modules: ``fake`` (the loopback Anthropic API) and ``project``
(a project folder to lay out, run pytest in and read back; see ``harness.py``).

``tests/`` is on ``sys.path`` through ``pythonpath`` in pyproject.toml, so test modules import
``fakeapi``, ``genhelpers``, ``harness`` and ``planfactory`` by name, and so do the processes
they spawn (multiprocessing's spawn start method passes ``sys.path`` on).
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import importlib.metadata
import os
import pkgutil
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

import pytest_batchgen
import bytecode_folder
import forkserver
from fakeapi import FakeAnthropic
from forkserver import ForkServer
from genhelpers import Router, loopback_api
from harness import Project

#: what an in-process run loads late, kept loaded from the first test on: pytester restores
#: ``sys.modules`` after each ``runpytest``, so whatever a run imports first is imported again by
#: the next one, and modules loaded before the run are kept
KEPT_LOADED = ("anthropic", "httpx2", "httpcore2", "vcr", "vcr.stubs.httpx_stubs", "xdist.dsession")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: a worker more than there are cores. A fifth to a quarter of this suite's
    time is spent waiting (on the processes its runs fork and start, on the loopback server's
    slow replies, on Ctrl-C and kill tests): with a worker a core, a core idles through every
    wait (2 cores: 2 workers 161 to 185 s, 3 workers 139 s, 4 workers 143 s)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1


def pytest_configure(config: pytest.Config) -> None:
    """Under ``PYTHONDONTWRITEBYTECODE`` (common in containers, and set on this project's
    machines), the interpreters this suite starts share their bytecode in a folder of their own.

    The suite starts some 70 interpreters: its xdist workers, those of the runs it starts with
    ``-n 2``, and its ``runpytest_subprocess`` runs. Without bytecode files each one compiled the
    plugin's 16,000 lines again (a quarter of a second) and the workers their test modules. The
    folder (``PYTHONPYCACHEPREFIX``) is a temporary one, removed when the suite ends: nothing is
    written beside the sources, as the variable asked. The tests of what a read-only run writes
    take the prefix away again, so that bytecode beside the project's files would show. The
    folder starts with links to the installed packages' bytecode, in memory where there is
    room, and the plugins' and test modules' rewritten bytecode is written while the workers
    start (see ``bytecode_folder.py``). Only the suite's own process decides; a
    ``pytest --batch-plan`` run at the repository's root, which loads this conftest too, is
    left as it is."""
    if hasattr(config, "workerinput") or config.getoption("batch_plan", None):
        return
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        prefix = tempfile.mkdtemp(prefix="batchgen-tests-pycache-", dir=bytecode_folder.memory_folder())
        atexit.register(shutil.rmtree, prefix, ignore_errors=True)
        bytecode_folder.link_installed(prefix)
        os.environ["PYTHONPYCACHEPREFIX"] = prefix
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        sys.pycache_prefix = prefix  # where this process's rewriting below writes, as its workers will read
    elif sys.dont_write_bytecode:
        return  # the workers write no bytecode either: nothing to write for them
    if config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses", None):
        threading.Thread(
            target=bytecode_folder.rewrite_ahead, args=(config,), name="rewrite-ahead", daemon=True
        ).start()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove the temporary folders of the sessions before the last three now, on a thread,
    rather than when this session ends, as pytest does.

    pytest keeps the ``pytest-N`` folders of the last three sessions (``tmp_path_retention_count``)
    and removes the older ones as a session ends, after its last test: the suite's own folder
    holds some 14,000 files (56 MB), which took 2.0 to 2.7 s to remove here (0.8 s of it CPU, the
    rest the disk), added to the end of every suite run that followed three others (CI's, on one
    machine). Here the same removal (pytest's own function, with the same arguments) runs while
    the first tests do, once the bytecode is written ahead, and the end finds nothing to do.
    Only the suite's own process; it uses pytest's private helpers, and does nothing should
    they change."""
    config = session.config
    if hasattr(config, "workerinput") or config.getoption("batch_plan", None):
        return
    try:
        from _pytest.pathlib import LOCK_TIMEOUT, cleanup_numbered_dir

        factory = config._tmp_path_factory  # type: ignore[attr-defined]
        if factory._given_basetemp is not None or factory._retention_policy == "none":
            return
        basetemp = factory.getbasetemp()  # this session's folder (xdist's controller makes it anyway)
        keep = int(config.getini("tmp_path_retention_count"))
        dead_before = basetemp.stat().st_mtime - LOCK_TIMEOUT
    except Exception:  # noqa: BLE001 - only a head start: pytest removes them at the end otherwise
        return
    first = [thread for thread in threading.enumerate() if thread.name == "rewrite-ahead"]

    def remove() -> None:
        for thread in first:  # the workers' bytecode first: it is on their way, this is not
            thread.join()
        cleanup_numbered_dir(basetemp.parent, "pytest-", keep, dead_before)

    threading.Thread(target=remove, name="old-temporary-folders", daemon=True).start()


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_as_from_a_terminal() -> None:
    """Ctrl-C for the runs the tests start, as a terminal's ``pytest`` has it, however this
    suite was started. A shell that starts a command in the background without job control
    (``pytest -n auto &`` in a script) starts it with SIGINT ignored, and every process it starts
    inherits that: a Python started so installs no KeyboardInterrupt handler, and the tests that
    press Ctrl-C in a run then wait for it to time out. A handled SIGINT is reset to the default
    by ``exec``, so the runs started from here, and the fork server, install theirs again."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _late_modules_kept_loaded() -> None:
    """Import what the plugin loads lazily before the first test's runs, so no run imports it.

    The plugin imports the SDK and vcrpy late (on a thread, and once a reply is recorded), and
    some of its own modules and xdist's only when a run needs them; pytester drops them again
    when each run ends, so every run paid the SDK's seconds, vcrpy's third of one and some 30 ms
    of the plugin's own. A fixture, not imports at the top of this file: this conftest is also
    loaded by a ``pytest --batch-plan`` run at the repository's root (``testpaths``), which must
    stay as light as the plugin makes it. The tests of what a run imports start fresh
    interpreters, which none of this reaches.

    Then the garbage collector stops tracking what is loaded so far (``gc.freeze``): it lives
    for the session anyway, and each generating run forks a sending process from this large
    test process; a collection in either process would write to every page of it while the
    child lives, and the kernel copy them (90 ms a run, 4 s of tests/test_generation.py and
    test_reporting.py, before this).
    """
    for name in KEPT_LOADED:
        importlib.import_module(name)
    for module in pkgutil.iter_modules(pytest_batchgen.__path__, "pytest_batchgen."):
        importlib.import_module(module.name)
    from pytest_batchgen import preload

    # the HTTP transport's TLS context, made once a process (reading the CA bundle, 50 ms): here
    # before any run, so that the sending processes the runs fork have it too
    preload.tls_context_soon()
    preload.take_tls_context()
    gc.freeze()


class _ReadOnce(importlib.metadata.PathDistribution):
    """An installed distribution whose metadata, entry points and file list are read once."""

    metadata = functools.cached_property(importlib.metadata.PathDistribution.metadata.fget)  # type: ignore[assignment]
    entry_points = functools.cached_property(importlib.metadata.PathDistribution.entry_points.fget)  # type: ignore[assignment]
    files = functools.cached_property(importlib.metadata.PathDistribution.files.fget)  # type: ignore[assignment]


@pytest.fixture(scope="session", autouse=True)
def _installed_distributions_read_once() -> Iterator[None]:
    """The installed distributions, read once for the session's in-process runs.

    Each ``pytester.runpytest`` starts pytest anew, and pytest reads every installed
    distribution's metadata again: the plugins' entry points (pluggy), the files of the
    distributions that hold plugins (to rewrite their asserts) and, for the header's "plugins:"
    line, each plugin's METADATA file, parsed as an e-mail. With the SDK's dependencies
    installed that was 15 to 25 ms of every run, some 600 runs a session. Nothing installs
    or removes a package while the suite runs; a lookup with arguments (one distribution by
    name) still goes to importlib."""
    distributions = importlib.metadata.distributions
    installed = [_ReadOnce(d._path) if type(d) is importlib.metadata.PathDistribution else d for d in distributions()]

    def read_once(**kwargs: Any) -> Iterable[importlib.metadata.Distribution]:
        return distributions(**kwargs) if kwargs else iter(installed)

    importlib.metadata.distributions = read_once  # type: ignore[assignment]
    yield
    importlib.metadata.distributions = distributions


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    """A fresh loopback API per test, with a :class:`~genhelpers.Router` as its default reply;
    the SDK finds it through the environment (``ANTHROPIC_BASE_URL``, a distinctive
    ``ANTHROPIC_API_KEY``, ``CI`` and ``GITHUB_ACTIONS`` unset)."""
    yield from loopback_api(monkeypatch, Router())


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    """An empty project in ``pytester.path`` (the working folder of the runs)."""
    return Project(pytester.path, pytester)


@pytest.fixture(scope="session")
def _fork_server() -> Iterator[ForkServer | None]:
    """This test process's fork server (see ``forkserver.py``), or None where processes cannot fork."""
    if not forkserver.available():
        yield None
        return
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture
def forks(_fork_server: ForkServer | None) -> Iterator[ForkServer | None]:
    """The fork server, for one test: a run the test left going (it failed before waiting for
    it) is killed when the test ends."""
    yield _fork_server
    if _fork_server is not None:
        _fork_server.end_all()
