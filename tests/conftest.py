"""Fixtures shared by the test modules: ``fake`` (the loopback Anthropic API) and ``project``
(a project folder to lay out, run pytest in and read back; see ``harness.py``).

``tests/`` is on ``sys.path`` through ``pythonpath`` in pyproject.toml, so test modules import
``fakeapi``, ``genhelpers``, ``harness`` and ``planfactory`` by name, and so do the processes
they spawn (multiprocessing's spawn start method passes ``sys.path`` on).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Imported here, before any in-process run: pytester restores ``sys.modules`` after each
# ``runpytest``, so whatever a run imports first is imported again by the next one. Modules
# loaded before the run are kept, and conftest is loaded before any test runs. The plugin
# imports the SDK and vcrpy lazily (on a thread, and only once a reply is recorded), so they
# are named here themselves: the SDK takes seconds, vcrpy (with the HTTP libraries it can
# patch) a third of one, and a generating run that imported them afresh paid that each time.
# The plugin's own modules that a run loads late (some 30 ms) and xdist's are kept loaded too.
# The tests of what a run imports start fresh interpreters, which none of this reaches.
import importlib
import pkgutil

import anthropic  # noqa: F401
import httpcore2  # noqa: F401
import httpx2  # noqa: F401
import pytest_batchgen
import vcr  # noqa: F401
import vcr.stubs.httpx_stubs  # noqa: F401
import xdist.dsession  # noqa: F401
import forkserver
from fakeapi import FakeAnthropic
from forkserver import ForkServer
from genhelpers import Router, loopback_api
from harness import Project

for _module in pkgutil.iter_modules(pytest_batchgen.__path__, "pytest_batchgen."):
    importlib.import_module(_module.name)


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
def forks() -> Iterator[ForkServer | None]:
    """This test process's fork server (see ``forkserver.py``), or None where processes cannot fork."""
    if not forkserver.available():
        yield None
        return
    server = ForkServer()
    yield server
    server.close()
