"""The sending process: a live run's requests go out from a process of its own (issue 12).

pytest runs an item per checklist line, and the SDK builds, sends and parses every request;
in one process both hold the same interpreter lock, so a run at zero latency spent twice the
bare SDK's CPU seconds on one core while the second one idled. Here the plugin forks when it
is configured, before collection: the child imports the SDK while the parent collects, then
runs the ordinary :class:`~pytest_batchgen.dispatch.Dispatcher` (pacing, recording, repairs,
``--batch-max-cost``) on the rows the parent names once collection ends, and sends each
:class:`~pytest_batchgen.dispatch.RowResult` back as it ends. The parent runs pytest and never
imports the SDK.

The parent writes each draft of a live run the child sends it, and before it the reply's
recording, then checks it (:class:`AskChecks`; in a replay the child writes its drafts). The
parent parses and checks every output anyway, for its items, which then find the parse and the
verdicts made: no output is parsed or linted twice, the conftests' checklist forms and a judge
run in one process, and the child is left the requests and the recordings' YAML. A fork, not
a new interpreter: the child inherits the parsed plans and settings, and starts importing the
SDK at once.

A replay-only run (record mode ``none``) forks too: the child reads the recordings and writes
the outputs, and imports neither the SDK nor vcrpy. Forked only where that is safe and pays
(:func:`why_not`); elsewhere the dispatcher runs on a thread of the pytest process as before.

The child ignores Ctrl-C: the parent decides, and tells it to send nothing more, and what is in
flight is finished and recorded. A parent that dies (``kill -9``, a second Ctrl-C) closes the
pipe, and the child exits at once, as the parent's own thread would have died with it.

Messages (pickled, over two pipes). To the child: ``start`` (the rows), ``checked`` (a verdict
and the parent's own spend), ``cancel``. To the parent: ``check`` (a draft, written or to write,
and its recording to write first), ``result`` (a row ended), ``status`` (the counters, while
nothing ends), ``finished`` or ``crashed``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checklist import Failure
from .dispatch import DraftChecks, RecordingNotWritten, RowResults, write_draft, write_recording
from .fsutil import atomic_write
from .outcomes import Outcome
from .plan import Row
from .run import PlanRun
from .settings import Role, Settings

if TYPE_CHECKING:
    from .client import Unwritten
    from .dispatch import RowResult
    from .state import BatchState

#: how often the child sends its counters while nothing ends (the progress line's pace)
STATUS_SECONDS = 0.25


def why_not(settings: Settings) -> str | None:
    """Why this run keeps the dispatcher in the pytest process (None: it forks).

    - the ini asks for it (``batchgen_sender = thread``), or the platform has no ``fork``
      (Windows), or is macOS, whose system libraries are not safe in a forked child;
    - Python 3.12+ with other threads running: forking then may deadlock (and warns);
    - an xdist controller (its workers already run pytest elsewhere), Message Batches (hours of
      waiting, not CPU).

    A replay-only run (record mode ``none``) forks too: the child reads each row's recording
    and writes its output on the other core, ahead of the tests, while this process checks and
    tests them: 1,000 rows took 1.48 x validate-only's time, against 2.19 x replayed on the main
    thread at each test's turn (``benchmarks/bench_whole_run.py --only replay``, medians of 3 pairs
    in one hour). The child replays on the lanes of a live run, not one row at a time
    (:class:`~pytest_batchgen.dispatch.InlineReplay`): each draft waits for this process's
    verdict, and one row at a time left the child idle through every wait.
    """
    if settings.sender == "thread":
        return "batchgen_sender = thread"
    if not hasattr(os, "fork") or sys.platform == "darwin":
        return f"no safe fork on {sys.platform}"
    if sys.version_info >= (3, 12) and threading.active_count() > 1:
        return "other threads are running"
    if settings.role is not Role.PLAIN:
        return "pytest-xdist: the workers run the tests"
    if settings.api == "batches":
        return "Message Batches"
    return None


@dataclass
class _Counters:
    """What the progress line and the summary read of a dispatcher, as the child last sent it."""

    in_flight: int = 0
    done: int = 0
    failed: int = 0
    spent: float = 0.0
    tokens: int = 0
    replies: int = 0
    note: str = ""
    budget_stopped: bool = False
    stop_reason: str = ""
    pacing: str = ""


def _counters(d: Any) -> _Counters:
    total = len(d.jobs)
    pacing = d.pacer.status if d.done < total else ""
    return _Counters(
        d.in_flight, d.done, d.failed, d.spent, d.tokens, d.replies, d.note, d.budget_stopped, d.stop_reason, pacing
    )


class _PacerView:
    """The parent's view of the child's pacer: what the progress line shows of it."""

    accounts: dict[str, str] = {}  # the child remembers the account's limits itself

    def __init__(self) -> None:
        self.status = ""


class SenderProcess:
    """The parent's end of the forked child, from ``pytest_configure`` to the session's end."""

    def __init__(self, pid: int, inbox: Connection, outbox: Connection) -> None:
        self.pid = pid
        self._to_child = outbox
        self._from_child = inbox
        self._lock = threading.Lock()
        self._status: int | None = None
        self.started = False  # rows were sent to it

    @classmethod
    def fork(cls, state: BatchState) -> SenderProcess:
        """Fork the child now; it imports the SDK, then waits for :meth:`dispatch`."""
        from .preload import modules_for

        down_read, down_write = Pipe(duplex=False)
        up_read, up_write = Pipe(duplex=False)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            down_write.close()
            up_read.close()
            _child(state, modules_for(state.settings), down_read, up_write)
        down_read.close()
        up_write.close()
        return cls(pid, up_read, down_write)

    def send(self, message: tuple[Any, ...]) -> bool:
        """Send to the child; False when it is gone."""
        with self._lock:
            try:
                self._to_child.send(message)
            except (OSError, ValueError):
                return False
        return True

    def receive(self) -> tuple[Any, ...]:
        return self._from_child.recv()

    def dispatch(
        self, rows: Sequence[tuple[PlanRun, Row]], afresh: Iterable[str], concurrency: int = 8
    ) -> RemoteDispatch:
        """The dispatcher's stand-in for ``rows``; :meth:`RemoteDispatch.start` sends them.
        ``concurrency`` drafts at most are checked at once (their judge calls among them)."""
        return RemoteDispatch(self, rows, sorted(afresh), concurrency)

    def close(self) -> None:
        """At the end of the session, or when there is nothing to send. A child that was given
        no rows has nothing in flight: it is stopped and reaped. One that was has normally
        finished (the session waited for it); if the session ended without waiting (a second
        Ctrl-C), the closed pipe makes it exit at once, and it is reaped if it has."""
        with self._lock:
            self._to_child.close()
        if not self.started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.wait(block=not self.started)

    def wait(self, block: bool = True) -> int | None:
        """Reap the child once; its wait status (None while it runs and ``block`` is false)."""
        if self._status is None:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:  # reaped by another thread meanwhile
                pid, status = self.pid, self._status or 0
            if pid:
                self._status = status
        return self._status


class RemoteDispatch:
    """What :class:`~pytest_batchgen.generation.Generation` drives, with the rows generated in
    the child: the same start / result / join / cancel interface and counters as
    :class:`~pytest_batchgen.dispatch.BackgroundDispatch`, fed by a thread that reads the child's
    messages."""

    def __init__(
        self, sender: SenderProcess, rows: Sequence[tuple[PlanRun, Row]], afresh: list[str], concurrency: int = 8
    ) -> None:
        self.sender = sender
        self._rows = {run.row_id(row).key: (run, row) for run, row in rows}
        self.jobs = list(self._rows)
        self._afresh = afresh
        self._row_results = RowResults(self.jobs)
        self._finished = threading.Event()
        self._reader: threading.Thread | None = None
        # as many as the requests in flight: a draft's checks may wait seconds on a judge call
        # (the executor's default, 6 threads on 2 cores, held 32 at a time to 6)
        self._checking = concurrent.futures.ThreadPoolExecutor(
            max(1, concurrency), thread_name_prefix="batchgen-checks"
        )
        self.pacer = _PacerView()
        self._counters = _Counters()
        self._cancelled = ""
        #: spend outside the child that counts against --batch-max-cost (the judge's, in this
        #: process): sent with every verdict
        self.extra_spent: Callable[[], float] = lambda: 0.0

    # the counters of the progress line and the summary, as the child last reported them
    in_flight = property(lambda self: self._counters.in_flight)
    done = property(lambda self: self._counters.done)
    failed = property(lambda self: self._counters.failed)
    spent = property(lambda self: self._counters.spent)
    tokens = property(lambda self: self._counters.tokens)
    replies = property(lambda self: self._counters.replies)
    note = property(lambda self: self._counters.note)
    budget_stopped = property(lambda self: self._counters.budget_stopped)

    @property
    def stop_reason(self) -> str:
        return self._counters.stop_reason or self._cancelled

    def start(self) -> None:
        if self._reader is not None:
            return
        self._reader = threading.Thread(target=self._read, name="batchgen-sender-results", daemon=True)
        self._reader.start()
        self.sender.started = True
        if not self.sender.send(("start", self.jobs, self._afresh)):
            self._ended()

    def _read(self) -> None:
        try:
            while True:
                try:
                    message = self.sender.receive()
                except (EOFError, OSError):
                    return self._ended()
                kind = message[0]
                if kind == "check":
                    self._check(*message[1:])
                elif kind == "result":
                    _, result, counters = message
                    self._set(counters)
                    self._row_results.set(result.key, result)
                elif kind == "status":
                    self._set(message[1])
                elif kind == "finished":
                    self._set(message[1])
                    return self._ended()  # every row has its result already
                elif kind == "crashed":
                    return self._ended(message[1])
        except Exception as exc:  # a bug: the rows not answered yet end in error, not in a hang
            self._ended(f"reading the sending process's messages failed: {type(exc).__name__}: {exc}")
        finally:
            self._checking.shutdown(wait=True)
            self.sender.wait()
            self._finished.set()

    def _check(
        self, number: int, key: str, path: Path | None, text: str | None = None, recording: Unwritten | None = None
    ) -> None:
        """The child asks for the failing checks of a draft (or of an output it found); with
        ``text``, a draft to write at ``path`` first, and before it the reply's ``recording``
        (see :class:`AskChecks`). This process parses and checks every output anyway, for its
        items, which then reuse the parse and the verdicts: quick checks here on the reading
        thread, others (a linter, a judge) on a worker thread, several at once, as the
        dispatcher would run them.

        Whatever fails here is an answer, and the row ends in error in the child: an exception
        left unanswered (a draft that could not be encoded killed the thread writing it) left
        the child waiting for the verdict, and the run for the child, for ever."""
        try:
            run, row = self._rows[key]
            # here, before a slow check queues it: a reply is on disk as soon as this process has it
            write_recording(recording)
        except RecordingNotWritten as exc:  # the row ends as one whose recording failed in the child
            return self._reply(number, None, exc)
        except Exception as exc:  # noqa: BLE001 - a bug must fail the row, not leave it waiting
            return self._reply(number, None, f"{type(exc).__name__}: {exc}")
        if run.quick_checks:
            self._answer(number, run, row, path, text)
        else:
            self._checking.submit(self._answer, number, run, row, path, text)

    def _answer(self, number: int, run: PlanRun, row: Row, path: Path | None, text: str | None = None) -> None:
        try:
            if text is not None and path is not None:
                try:
                    write_draft(run, row, path, text, False)  # written here; checked below
                except OSError as exc:  # raised in the child as its own write would be
                    return self._reply(number, None, exc)
            failures = [(rule.name, failure) for rule, failure in run.draft_failures(row, path)]
            self._reply(number, failures, None)
        except Exception as exc:  # noqa: BLE001 - a bug must fail the row, not leave it waiting
            self._reply(number, None, f"{type(exc).__name__}: {exc}")

    def _reply(self, number: int, failures: list[tuple[str, Failure]] | None, error: Any) -> None:
        """The verdict on the child's question ``number``: the failing checks, or why there are none."""
        self.sender.send(("checked", number, failures, error, self.extra_spent()))

    def _set(self, counters: _Counters) -> None:
        self._counters = counters
        self.pacer.status = counters.pacing

    def _ended(self, why: str = "") -> None:
        """The child is gone (reaped here): a row it did not answer ends in error, not in a hang."""
        status = self.sender.wait()
        if not why:
            code = os.waitstatus_to_exitcode(status) if status is not None else "?"
            why = f"the sending process ended (exit status {code}) before this row's result"
        for key in self._row_results.pending():
            self._row_results.set(key, _error(key, why))

    def cancel(self, reason: str) -> None:
        if not self._cancelled:
            self._cancelled = reason
            self.sender.send(("cancel", reason))

    def result(self, key: str, timeout: float | None = None) -> RowResult | None:
        return self._row_results.wait(key, timeout) if key in self._row_results else None

    def join(self, timeout: float | None = None) -> bool:
        if self._reader is None:
            return True
        return self._finished.wait(timeout)

    def results(self) -> dict[str, RowResult]:
        return self._row_results.all()


def _error(key: str, why: str) -> RowResult:
    from .dispatch import RowResult

    return RowResult(key, Outcome.ERROR, error=why)


# -- the child ---------------------------------------------------------------------------------


class AskChecks(DraftChecks):
    """The sending process's :class:`~pytest_batchgen.dispatch.DraftChecks`: the pytest process
    checks each draft (see :meth:`RemoteDispatch._check`), which leaves this process the
    requests and the recordings, and parses each output once in the run.

    With ``parent_writes`` (a live run), the draft goes with the question and the pytest process
    writes it too, and before it the reply's recording (:attr:`takes_recordings`; the recorder
    serialises it here and hands it over, see ``Recorder.hand_over``): in a live run this
    process, which sends, parses and records every reply, is the one the run waits for, while
    the pytest process idles half the time. A new file costs tens of microseconds to a
    millisecond of CPU in the kernel here, and the interpreter lock is handed back and forth
    around each. At 1,000 rows, zero latency, concurrency 8, the run took 1.31 x the bare SDK
    script's time with the drafts written there, against 1.66 x with this process writing them
    (``benchmarks/bench_whole_run.py --only bare``, medians of three runs alternating); the
    recordings written there too took the span from the first request to the last reply from
    5.82 to 5.12 s (concurrency 8, medians of 8 runs alternating) and from 5.91 to 5.28 s
    (concurrency 64, 6 runs; ``benchmarks/timeline.py --roots``). A replay writes its drafts
    here: there the pytest process, which runs every item, is the one the run waits for."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None], *, parent_writes: bool = False) -> None:
        self._send = send
        #: the pytest process writes each checked draft, and so the reply's recording before it
        self.takes_recordings = parent_writes
        self._numbers = itertools.count()
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._lock = threading.Lock()
        #: the pytest process's own spend (a judge's), as its last verdict said
        self.parent_spent = 0.0

    async def existing(self, run: PlanRun, row: Row) -> list[tuple[Any, Failure]]:
        return await self._ask(run, row, None)

    async def draft(
        self, run: PlanRun, row: Row, path: Path, text: str, check: bool, recording: Unwritten | None = None
    ) -> list[tuple[Any, Failure]]:
        if check and self.takes_recordings:
            return await self._ask(run, row, path, text, recording)
        write_recording(recording)  # (the dispatcher hands none over without a check)
        atomic_write(path, text, sync=False)  # fsynced at the end of the run (fsutil.sync_deferred)
        return await self._ask(run, row, path) if check else []

    async def _ask(
        self,
        run: PlanRun,
        row: Row,
        path: Path | None,
        text: str | None = None,
        recording: Unwritten | None = None,
    ) -> list[tuple[Any, Failure]]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            number = next(self._numbers)
            self._waiting[number] = (loop, answer)
        self._send(("check", number, run.row_id(row).key, path, text, recording))
        named = await answer
        rules = {rule.name: rule for rule in run.rules}
        return [(rules[name], failure) for name, failure in named]

    def answered(
        self,
        number: int,
        named: list[tuple[str, Failure]] | None,
        error: str | OSError | RecordingNotWritten | None,
        spent: float,
    ) -> None:
        """The pytest process's verdict (on the thread that reads its messages). An ``OSError``
        is its write of the draft failing: raised here as this process's own write would be; a
        :class:`~pytest_batchgen.dispatch.RecordingNotWritten`, its write of the recording."""
        self.parent_spent = spent
        with self._lock:
            loop, answer = self._waiting.pop(number)
        if isinstance(error, (OSError, RecordingNotWritten)):
            loop.call_soon_threadsafe(answer.set_exception, error)
        elif error is not None:
            loop.call_soon_threadsafe(answer.set_exception, RuntimeError(f"checking the draft failed: {error}"))
        else:
            loop.call_soon_threadsafe(answer.set_result, named)


def _child(state: BatchState, modules: tuple[str, ...], inbox: Connection, outbox: Connection) -> None:
    """The forked process: import, wait for the rows, generate them, report, exit.

    It leaves with ``os._exit``: pytest's exit handlers, the capture's files and the parent's
    atexit hooks are the parent's alone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        # the parent may be gone: the rows still end and are recorded
        with send_lock, contextlib.suppress(OSError, ValueError):
            outbox.send(message)

    try:
        from .preload import Preloader

        _without_assertion_rewriting()
        Preloader(modules).run_here()
        try:
            start = inbox.recv()
        except (EOFError, OSError):
            os._exit(0)  # nothing to send: the run validated, failed to collect or ended
        _, keys, afresh = start
        _generate(state, keys, set(afresh), inbox, send)
    except BaseException:
        send(("crashed", "the sending process failed: " + traceback.format_exc(limit=8)))
        os._exit(1)
    os._exit(0)


def _without_assertion_rewriting() -> None:
    """Import as a plain interpreter does, without pytest's assertion-rewriting import hook.

    pytest puts the hook first on ``sys.meta_path`` so that it can rewrite the ``assert``
    statements of test modules, conftests and plugins. This process runs none of them: it
    imports the SDK, vcrpy and the plugin's own dispatching modules (whose few asserts only
    narrow types), and the hook looked at each of the SDK's modules first (and searched again
    for those it did not rule out by name). Without it, the SDK's import here took 10% fewer
    instructions (cachegrind: 3.93 G against 4.37 G), which puts the first request out earlier."""
    from _pytest.assertion.rewrite import AssertionRewritingHook

    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, AssertionRewritingHook)]


def _generate(
    state: BatchState, keys: list[str], afresh: set[str], inbox: Connection, send: Callable[[tuple[Any, ...]], None]
) -> None:
    from .fsutil import sync_deferred
    from .generation import make_dispatcher, remember_limits

    by_key = {run.row_id(row).key: (run, row) for run, row in state.selected()}
    # the pytest process writes a live run's drafts and recordings (this process is the one the
    # run waits for)
    live = state.settings.record_mode != "none"
    rows = [by_key[k] for k in keys]
    dispatcher = make_dispatcher(
        state.settings, state.prices, rows, afresh, replay_ahead=True, hand_over_recordings=live
    )
    checks = dispatcher.checks = AskChecks(send, parent_writes=live)
    dispatcher.extra_spent = lambda: checks.parent_spent
    dispatcher.on_result(lambda result: send(("result", result, _counters(dispatcher))))

    def orders() -> None:
        while True:
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                # The parent died (kill -9, a second Ctrl-C) before this process finished. Its
                # replies in flight are abandoned, as they would be in the parent's own thread:
                # a run started again at once must not find this one still writing its files.
                os._exit(1)
            if message[0] == "checked":
                checks.answered(*message[1:])
            elif message[0] == "cancel":
                dispatcher.cancel(message[1])

    threading.Thread(target=orders, name="batchgen-sender-orders", daemon=True).start()
    dispatcher.start()
    while not dispatcher.join(STATUS_SECONDS):
        send(("status", _counters(dispatcher)))
    remember_limits(dispatcher)
    # On disk before the parent records the plan. Syncing as the run went on (each status) took
    # this from the run's tail (0.15 s at 1,000 rows) but as much from its requests: the writes
    # and the fsyncs share the disk (benchmarks/timeline.py, 6 runs each).
    sync_deferred()
    send(("finished", _counters(dispatcher)))
