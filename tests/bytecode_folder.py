"""The suite's bytecode folder: what ``pytest_configure`` in conftest.py puts in it for the
processes the suite starts. Not a test module.

Under ``PYTHONDONTWRITEBYTECODE`` the suite gives the interpreters it starts a temporary
bytecode folder of their own (``PYTHONPYCACHEPREFIX``), so that each compiles the plugin and
the tests once between them rather than once each. These helpers make that folder cheap to
start from: in memory where there is room (:func:`memory_folder`), holding the bytecode the
installed packages already have (:func:`link_installed`), and the plugins' and test modules'
rewritten bytecode written while the xdist workers start (:func:`rewrite_ahead`). Measured on the
2-core machine, from ``pytest -n auto`` to the workers' collections done (``-k`` matching no
test): 20 to 26 s and 33 to 48 s of CPU before, 11.1 to 11.9 s and 20 to 21 s of CPU after.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest


def memory_folder() -> str | None:
    """``/dev/shm`` where it is a folder this process may write with a gigabyte free (Linux's
    memory-backed file system), else None (the temporary folder).

    The bytecode folder gets thousands of links and files in the suite's first seconds, while
    every process waits for them. On this project's machines a new file in ``/tmp`` costs up to
    a millisecond, in memory some 20 us: linking the installed bytecode took 2.3 s there
    against 0.16 s here. What it holds is a few megabytes, removed when the suite ends."""
    folder = "/dev/shm"
    try:
        free = os.statvfs(folder)
    except (OSError, AttributeError):  # no such folder; no statvfs (Windows)
        return None
    if free.f_bavail * free.f_frsize < 1 << 30 or not os.access(folder, os.W_OK | os.X_OK):
        return None
    return folder


def link_installed(prefix: str, roots: Iterable[str] | None = None) -> None:
    """Give the bytecode folder the bytecode the interpreter's own modules and the installed
    packages already have, as links.

    Python looks for bytecode only under ``PYTHONPYCACHEPREFIX`` once it is set, never in the
    ``__pycache__`` folders beside the standard library's and site-packages' modules: each
    process then compiled again what it imported (the SDK alone is some 900 modules), and the
    suite's three xdist workers did it at once as they started: 3 s of CPU each. A link per
    bytecode file (a few thousand, a fraction of a second) lets them read what pip and the
    interpreter's installer compiled. Python checks each file against its source as always;
    one it finds stale it writes anew, which replaces the link here and not the file it
    pointed to. The standard library's tests, and other interpreters' site-packages inside
    its folder, are skipped. ``roots``: the folders to link (default: the interpreter's)."""
    tail = f".{sys.implementation.cache_tag}.pyc"
    if roots is None:
        roots = (sysconfig.get_path(kind) for kind in ("stdlib", "platstdlib", "purelib", "platlib"))
    roots = set(roots)
    skipped = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "dist-packages"}
    for root in roots:
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = [d for d in subfolders if d not in skipped or os.path.join(folder, d) in roots]
            if os.path.basename(folder) != "__pycache__":
                continue
            mirror = prefix + os.path.dirname(folder)
            os.makedirs(mirror, exist_ok=True)
            for name in files:
                if name.endswith(tail):  # not python -O's (.opt-1.pyc)
                    with contextlib.suppress(OSError):
                        os.symlink(os.path.join(folder, name), os.path.join(mirror, name))


def rewrite_ahead(config: pytest.Config, loaded: Iterable[ModuleType] | None = None) -> None:
    """Write the assert-rewritten bytecode the xdist workers will look for, while they start.

    pytest rewrites the asserts of the plugins' modules (hypothesis, anyio, xdist, this plugin)
    and of every test module, and each worker imports all of them: on a fresh checkout the
    three workers rewrote them at once, each (3.7 s of CPU a worker), before the first test
    ran. Written here first, in the order a worker imports them (the plugins' modules this
    process loaded through pytest's hook, then the test modules), they mostly find it. This
    uses pytest's own rewriting functions, which are not public: should they change, nothing
    is written here and the workers rewrite as before. ``loaded``: the modules to look at for
    the plugins' (default: all this process imported)."""
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        loaded = list(sys.modules.values()) if loaded is None else loaded
        for source in _rewritten_here(loaded, rewrite.AssertionRewritingHook) + _test_modules(config):
            pyc = rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(source, pyc, state.trace) is not None:
                continue
            rewrite.try_makedirs(pyc.parent)
            stamp, code = rewrite._rewrite_test(source, config)
            rewrite._write_pyc(state, code, stamp, pyc)
    except Exception:  # noqa: BLE001 - only a head start: the workers rewrite what is missing
        return


def _rewritten_here(loaded: Iterable[ModuleType], hook: type) -> list[Path]:
    """The source files of the ``loaded`` modules that were imported through pytest's rewriting
    hook (``hook``), in their order."""
    return [
        Path(module.__file__)
        for module in loaded
        if isinstance(getattr(getattr(module, "__spec__", None), "loader", None), hook)
        and (module.__file__ or "").endswith(".py")
    ]


def _test_modules(config: pytest.Config) -> list[Path]:
    """The test modules and conftests directly in the ``testpaths`` folders, in name order (a
    worker's collection order)."""
    patterns = config.getini("python_files")
    return [
        source
        for folder in config.getini("testpaths")
        for source in sorted((config.rootpath / folder).glob("*.py"))
        if source.name == "conftest.py" or any(fnmatch.fnmatch(source.name, p) for p in patterns)
    ]
