"""Fresh pytest processes without a fresh interpreter's start: a fork server for the crash tests.

Not a test module. The crash tests (``test_batches_crash.py``) kill a run with SIGKILL or
SIGINT and run it again, so each run must be a process of its own. Started as
``python -m pytest``, every such process spends seconds before its first line of pytest:
the interpreter, pytest and its plugins, the SDK (2.4 s on the 2-core CI machine) and vcrpy,
twice a test. That was over a minute of the suite.

:class:`ForkServer` starts one process per test process that imports all of that once and
then waits; each run is a child it forks (``os.fork``): a new process, with its own pid, memory
and file descriptors, that already has the modules loaded. The child takes the caller's working
folder, environment and ``sys.path`` as ``python -m pytest`` would have them, runs
``pytest.main`` and exits as the interpreter's shutdown begins (non-daemon threads joined,
atexit handlers run), so a run that is not killed ends as a subprocess run ends.

What the child does not show is the import itself: the tests of what a run imports and when
(``test_perf.py``, ``test_validate_only.py``) start fresh interpreters, and so does every
other subprocess test. The server needs ``os.fork`` (POSIX); elsewhere :func:`available` is
False and the callers start ``python -m pytest`` as before.

Protocol, one JSON object a line: the caller writes ``{"args", "cwd", "env", "stdout",
"stderr"}``; the server forks and answers ``{"pid"}``, then ``{"pid", "returncode"}`` once the
child is gone (``-signal`` when a signal ended it, as :mod:`subprocess` says it). Several
children may run at once (two runs of one plan started together), so an end can come before
the answer to a later start.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: imported by the server before it forks: what a batch run imports, less the plugins pytest
#: loads itself (xdist...), whose asserts it could then no longer rewrite. anyio, a plugin too,
#: comes with the SDK anyway: see :meth:`ForkServer.start` for the warning that costs
PRELOAD = (
    "pytest",
    "_pytest.pytester",
    "anyio._backends._asyncio",  # anyio's pytest plugin imports it: 0.14 s a run
    "pytest_batchgen.plugin",
    "pytest_batchgen.batches",
    "pytest_batchgen.client",
    "pytest_batchgen.dispatch",
    "pytest_batchgen.generation",
    "pytest_batchgen.recording",
    "anthropic",
    "anthropic.resources.messages.batches",
    "httpx2",
    "httpcore2",  # imported by httpx2's first client, else once a run
    "execnet",  # imported by xdist's plugin once configured, else once a run
    "vcr",
    "yaml",
)


#: packages whose frames a run's traceback shows, besides the standard library's (``pytest``
#: also names the plugin's)
TRACEBACK_PACKAGES = ("_pytest", "pytest", "pluggy", "xdist", "execnet")


def available() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


class Child:
    """One forked pytest run, used like :class:`subprocess.Popen`."""

    def __init__(self, server: ForkServer, pid: int, stdout: Path, stderr: Path) -> None:
        self._server = server
        self.pid = pid
        self._stdout = stdout
        self._stderr = stderr
        self.returncode: int | None = None

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # the server reaps an ended child at once: its pid may be reused
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server._poll(self.pid)
        return self.returncode

    def wait(self, timeout: float = 300.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise TimeoutError(f"forked pytest run {self.pid} did not end in {timeout:g} s")
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def communicate(self) -> tuple[str, None]:
        """Like ``Popen.communicate`` with stderr sent to stdout: the output, stdout then stderr."""
        out, err = self.output()
        return out + err, None

    def output(self) -> tuple[str, str]:
        """The run's stdout and stderr (once it ended)."""
        self.wait()
        return self._stdout.read_text(errors="replace"), self._stderr.read_text(errors="replace")


class ForkServer:
    """The caller's side: start the server process and ask it for runs (several may run at once)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import forkserver; forkserver.serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self._lock = threading.Lock()
        self._buffer = b""  # what was read from the server and not yet a whole line
        self._ended: dict[int, int] = {}
        self._running: set[int] = set()

    def start(self, args: list[str], *, cwd: Path, stdout: Path, stderr: Path, env: dict[str, str]) -> Child:
        """Fork a run of ``pytest args`` in ``cwd`` with ``env``, its output going to the two files.

        The modules the server imported cannot be rewritten by pytest, which warns about those
        that are pytest plugins too (anyio, which the SDK imports): a fresh interpreter would
        not, so forked runs ignore that warning."""
        with self._lock:
            args = ["-W", "ignore::pytest.PytestAssertRewriteWarning", *args]
            request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(stdout), "stderr": str(stderr)}
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
            while True:  # the answer, after the ends of other children that came first
                message = self._read()
                assert message is not None
                if not self._took_end(message):
                    break
            pid = message["pid"]
            self._running.add(pid)
        return Child(self, pid, stdout, stderr)

    def _took_end(self, message: dict[str, Any]) -> bool:
        """Whether ``message`` says a child ended (then it is recorded), not that one started."""
        if "returncode" not in message:
            return False
        self._ended[message["pid"]] = message["returncode"]
        self._running.discard(message["pid"])
        return True

    def _read(self, block: bool = True) -> dict[str, Any] | None:
        """The server's next message; None when ``block`` is false and no whole line is there."""
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            if not block and not select.select([fd], [], [], 0)[0]:
                return None
            data = os.read(fd, 65536)
            if not data:
                raise RuntimeError(f"the fork server ended (exit status {self._proc.wait()})")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _poll(self, pid: int) -> int | None:
        """The child's return code, or None while it runs (the server reports it when it ends)."""
        with self._lock:
            while pid not in self._ended and (message := self._read(block=False)) is not None:
                self._took_end(message)
            return self._ended.get(pid)

    def end_all(self) -> None:
        """Kill the runs still going (a failed test never waited for them) and read their ends."""
        with self._lock:
            for pid in self._running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            while self._running:
                message = self._read()
                assert message is not None
                self._took_end(message)

    def close(self) -> None:
        self.end_all()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()
        self._proc.wait(timeout=30)


# -- the server's side ------------------------------------------------------------------------


def serve() -> None:
    """Import :data:`PRELOAD` and every module of the plugin, fill the caches a run's traceback
    and its HTTP transport read, then fork a child per request read from stdin (see the module
    docstring). A child of a server that preloaded only :data:`PRELOAD` spent 0.3 to 1 s of CPU
    more a run (the crash tests took 46 to 49 s of CPU serially, against 24 to 27 s)."""
    import importlib
    import pkgutil

    import pytest_batchgen

    for name in PRELOAD:
        importlib.import_module(name)
    for module in pkgutil.iter_modules(pytest_batchgen.__path__, "pytest_batchgen."):
        importlib.import_module(module.name)  # what a run imports late, once, not in every child
    _warm_traceback_caches()
    # the HTTP transport's TLS context (the CA bundle read, 0.1 s of CPU a run): made here, every
    # child's runs take it, as in the test processes (``_late_modules_kept_loaded``)
    from pytest_batchgen import preload

    preload.tls_context_soon()
    preload.take_tls_context()
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join()  # the context's thread, ending
    gc.freeze()  # as the plugin's preloader does: the children's collections skip what is loaded
    channel_in, channel_out = sys.stdin.fileno(), os.dup(1)
    os.dup2(2, 1)  # a stray print of the server's goes to stderr, not into the protocol
    assert threading.active_count() == 1, "forking needs a process with one thread"
    running: set[int] = set()
    buffer, closed = b"", False
    while not closed or running:
        # a new request, or (every 10 ms while children run) an end to report
        if not closed and select.select([channel_in], [], [], 0.01 if running else None)[0]:
            data = os.read(channel_in, 65536)
            closed = not data
            buffer += data
        elif closed:
            time.sleep(0.01)
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            pid = os.fork()
            if pid == 0:
                try:
                    _child(json.loads(line), channel_out)  # exits
                finally:
                    os._exit(70)  # the child failed before pytest could run: never back into this loop
            running.add(pid)
            os.write(channel_out, (json.dumps({"pid": pid}) + "\n").encode())
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                running.discard(pid)
                ended = {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}
                os.write(channel_out, (json.dumps(ended) + "\n").encode())


def _warm_traceback_caches() -> None:
    """Fill what pytest reads to show a traceback, once, for every child.

    A run stopped with Ctrl-C formats its ``KeyboardInterrupt`` whole (pytest does so before it
    decides to print one line of it): for each of its some 27 frames, ``inspect.getmodule``
    resolves the path of every loaded module the first time (a ``realpath`` each, 2,000 modules
    with the SDK) and ``linecache`` reads the frame's source file. A child inherits both caches:
    those runs took about a second of CPU more than the others, where this is done once."""
    import inspect
    import linecache
    import sysconfig

    inspect.getmodule(sys._getframe())
    paths = sysconfig.get_paths()
    installed = (paths["purelib"], paths["platlib"])
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None) or ""
        standard = filename.startswith(paths["stdlib"]) and not filename.startswith(installed)
        if filename.endswith(".py") and (standard or name.startswith(TRACEBACK_PACKAGES)):
            linecache.getlines(filename, module.__dict__)


def _child(request: dict[str, Any], channel_out: int) -> None:
    """Become ``python -m pytest <args>`` started in ``cwd`` with ``env``, and exit with its status."""
    os.close(channel_out)
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # sys.path as `python -m pytest` in cwd has it: cwd, then PYTHONPATH, then the rest
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = list(dict.fromkeys([request["cwd"], *extra, *sys.path]))
    import pytest

    code = int(pytest.main(request["args"]))
    # the interpreter's shutdown, less its last step: non-daemon threads are joined and atexit
    # handlers run as at any exit, but the preloaded modules are not torn down one by one (0.4 s)
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
