"""DISPATCH: send every pending row to its model, concurrently, and repair failed drafts.

The dispatcher runs an asyncio loop in a background thread, started as soon as collection
ends, with at most ``concurrency`` requests in flight. Each row is generated at most once per
attempt; the row's test items block only on that row's future, so results are consumed as
they arrive. A draft is checked with the same compiled rules the items use; when checks fail
and attempts remain, the conversation continues with the draft and the failures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .checklist import Failure
from .client import CUT_OFF, FINISHED, Completion, ModelCallError, RecordingFailed, Unwritten, Usage
from .fsutil import atomic_write, failed_file
from .outcomes import Outcome
from .pacing import Pacer, SendingStopped
from .plan import Row
from .prompts import Prompt, build_prompt, normalise_output, repair_message, shared_prefix
from .run import PlanRun
from .settings import redact

#: at most this many lines of a check's output (a linter's report) go into a repair turn
REPAIR_DETAIL_LINES = 60


def _repair_text(failure: Failure) -> str:
    """A failure as the model needs it: the message, then the check's own output (what the
    linter found, at which line), without which "linter exited 1" cannot be acted on."""
    if not failure.detail:
        return failure.message
    return "\n".join([failure.message, *failure.detail.splitlines()[:REPAIR_DETAIL_LINES]])


def repair_turn(failures: Sequence[tuple[Any, Failure]], secrets: tuple[str, ...]) -> dict[str, str]:
    """The user turn that asks for a fixed draft (both dispatchers build it here), without the
    credential values ``secrets`` (:attr:`~pytest_batchgen.settings.Settings.secrets`).

    A check of yours or a custom form may put anything in its failure message (the environment
    it ran in, the key among it), and this turn is sent to the API: scrubbing the cassette
    afterwards would not take the key back out of the request. A linter's own output is scrubbed
    where it runs too (:mod:`pytest_batchgen.rules`), but only here is every failure scrubbed."""
    text = repair_message([(rule.name, rule.item.text, _repair_text(f)) for rule, f in failures])
    return {"role": "user", "content": redact(text, secrets)}


def repairable_failures(failures: list[tuple[Any, Failure]]) -> list[tuple[Any, Failure]]:
    """The failures a repair turn asks the model to fix: not those no new draft fixes (a check
    that raised, a judge call that failed), so that none is paid for and no API error is pasted
    into a repair turn."""
    return [(rule, f) for rule, f in failures if f.repairable]


#: how an attempt whose reply held no text ends (:func:`empty_reply`); both dispatchers know a
#: row that ended so by it (:func:`ended_empty`)
EMPTY_REPLY = "the model's reply was empty"


def empty_reply(stop_reason: str | None) -> str:
    """An attempt whose reply holds no text (no content, an empty text block, only a tool_use
    block): nothing to write, nothing to check, nothing to paste into a repair turn (the API
    refuses an empty assistant turn: "messages.1: all messages must have non-empty content
    except for the optional final assistant message"). Both dispatchers send the same request
    again while attempts remain."""
    return f"{EMPTY_REPLY} (no text, stop_reason {stop_reason}): nothing was written"


def empty_ending(run: PlanRun, path: Path, result: RowResult, stop_reason: str | None) -> str:
    """The row's error when its last attempt's reply was empty."""
    attempts = len(result.attempts)
    empty = sum(1 for a in result.attempts if (a.error or "").startswith(EMPTY_REPLY))
    if attempts == 1:
        times = "its only attempt"
    elif empty == attempts:
        times = f"all {attempts} attempts"
    else:
        times = f"the last attempt ({empty} of {attempts} were empty)"
    kept = f"; {run.plan.rel(path)} holds an earlier attempt's draft" if result.wrote else ""
    return f"{EMPTY_REPLY} (no text, stop_reason {stop_reason}) in {times}: nothing was written{kept}"


def ended_empty(result: RowResult) -> bool:
    """The row ended because its last reply was empty (generated again live when replayed, as
    a failed or refused row is)."""
    return result.outcome == Outcome.ERROR and (result.error or "").startswith(EMPTY_REPLY)


def truncated(max_tokens: int, draft: str | None, stop_reason: str | None = "max_tokens") -> str:
    """A reply that did not finish (its ``stop_reason`` is not in
    :data:`~pytest_batchgen.client.FINISHED`): why, where its partial draft is, or that it had
    no text. Cut off at ``max_tokens`` or by the model's context window, or ended by a stop
    reason that does not say the reply is finished (``pause_turn``, one the API adds later):
    both dispatchers handle each as a truncation, so that no draft that may be unfinished is
    checked, repaired or marked complete."""
    where = f"the partial draft is in {draft}" if draft else "it had no text yet, and nothing was written"
    if stop_reason == "max_tokens":
        return (
            f"the reply was cut off at max_tokens ({max_tokens}); {where}. "
            "Raise batchgen_max_tokens or shorten the format reference"
        )
    if stop_reason == "model_context_window_exceeded":
        return (
            f"the reply was cut off by the model's context window (its prompt and reply fill it); {where}. "
            "Shorten the format reference or the content rules, or use a model with a larger context window"
        )
    return (
        f"the reply ended with stop_reason {stop_reason!r}, not end_turn: it may be unfinished, "
        f"so it was not checked; {where}"
    )


def unwritable(run: PlanRun, exc: OSError, how: str = "written to") -> str:
    """One line naming the file a paid reply could not be written to (or recorded in), why, and
    the fix; both dispatchers end such a row with it, its attempts (and their cost) kept."""
    path = failed_file(exc)
    if path is None:
        return f"the reply could not be {how.split()[0]}: {exc.strerror or exc}"
    return (
        f"the reply could not be {how} {run.plan.rel(path)}: {exc.strerror or exc}; "
        f"make {run.plan.rel(path.parent)}/ writable, then run again"
    )


def _discard_draft(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when empty


def reply_path(run: PlanRun, row: Row, stop_reason: str | None, path: Path) -> Path:
    """Where a reply's text goes: ``path`` (the output, or the draft of a re-recorded row) for a
    finished reply; the plan's drafts folder (``Plan.draft_path``) for the partial draft of one
    that may be unfinished (:func:`truncated`). A cut-off text written to the output was checked by the next run like
    any output, and one that passed every check made the row complete: aside, it is no output,
    and the output keeps what it held (nothing, or an earlier attempt's draft)."""
    return path if stop_reason in FINISHED else run.plan.draft_path(row)


def discard_partial(run: PlanRun, row: Row) -> None:
    """A finished draft was written to the row's output: the partial draft an unfinished reply
    left aside (:func:`reply_path`) is no longer the row's latest reply, and goes (the
    baseline would show it as the new draft of a later run that wrote nothing). One system call
    when there is none."""
    draft = run.plan.draft_path(row)
    try:
        draft.unlink()
    except OSError:  # none (or, best effort, one that cannot go: it is only a file to read)
        return
    with contextlib.suppress(OSError):
        draft.parent.rmdir()  # only when empty


def write_draft(run: PlanRun, row: Row, path: Path, text: str, check: bool) -> list[tuple[Any, Failure]]:
    """Write a draft, then (when ``check``) its failing checks: one executor trip, not two. The
    pytest process of a forked run writes the drafts the sending process hands it the same way
    (``sender.RemoteDispatch._check``)."""
    atomic_write(path, text, sync=False)  # fsynced at the end of the run (fsutil.sync_deferred)
    run.docs.forget(path)
    return run.draft_failures(row, path) if check else []


class RecordingNotWritten(Exception):
    """The recording handed over with a draft (:attr:`DraftChecks.takes_recordings`) could not be
    written: the row ends as one whose recording failed in the client (``RecordingFailed``)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def write_recording(recording: Unwritten | None) -> None:
    """Write a recording handed over with a draft, ahead of the draft; its error as a
    :class:`RecordingNotWritten`."""
    if recording is None:
        return
    try:
        atomic_write(recording.path, recording.text, sync=False)  # fsynced at the end of the run
    except OSError as exc:
        raise RecordingNotWritten(exc) from None


class DraftChecks:
    """How the dispatcher writes a draft and learns its failing checks: here, in this process
    (the sending process asks the pytest process instead: :class:`pytest_batchgen.sender.AskChecks`)."""

    #: :meth:`draft` also writes, first, the reply's recording when the recorder handed it over
    #: (``Completion.unwritten``); else the dispatcher writes it as soon as the reply is parsed
    takes_recordings = False

    async def existing(self, run: PlanRun, row: Row) -> list[tuple[Any, Failure]]:
        """The failing checks of the row's output as it is before anything is sent."""
        return await asyncio.get_running_loop().run_in_executor(None, run.draft_failures, row)

    async def draft(
        self, run: PlanRun, row: Row, path: Path, text: str, check: bool, recording: Unwritten | None = None
    ) -> list[tuple[Any, Failure]]:
        """Write ``text`` to ``path``, then (when ``check``) its failing checks: on the loop when
        every check is quick (the write is not fsynced: fsutil.sync_deferred), else in one
        executor trip."""
        write_recording(recording)
        if run.quick_checks:
            return write_draft(run, row, path, text, check)
        return await asyncio.get_running_loop().run_in_executor(None, write_draft, run, row, path, text, check)


def _nothing(key: str) -> None:
    """What a client that records nothing does when a row's recording is held or superseded."""


def _promote_draft(run: PlanRun, draft: Path, output: Path, text: str) -> None:
    """A re-recorded row's draft passed: it becomes the output, and the draft goes."""
    atomic_write(output, text, sync=False)
    _discard_draft(draft)
    run.docs.forget(output)


@dataclass
class Attempt:
    """One request of a row: its usage, how it ended, and what the checks said of the draft."""

    number: int
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    replayed: bool = False
    model: str = ""
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    cost: float = 0.0  # estimated dollars; 0 for a replayed call
    would_cost: float = 0.0  # what the call costs live (what replay saved)
    batch: bool = False  # sent (or recorded) through Message Batches, at the batch price
    one_hour_writes: int = 0  # of usage's cache writes, those at the 1-hour rate (a batch's ttl)


@dataclass
class RowResult:
    """How generation ended for a row.

    ``outcome`` is ``passed`` (the last draft passed its checks), ``failed`` (it did not, after
    every attempt), ``truncated``, ``refused``, ``error`` (the API failed for good or a replay
    missed), ``kept`` (an existing output already passed, nothing was sent) or ``skipped``.
    """

    key: str
    outcome: Outcome
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    #: a reply of this generation was written: to the output (or a re-recorded row's draft), or,
    #: when it did not finish, to the drafts folder (:func:`reply_path`): not always an output
    wrote: bool = False
    budget_skipped: bool = False  # not sent because --batch-max-cost was reached
    hint: str | None = None  # how to try again (a replayed failure that this run may not re-record)
    reserved_usd: float = 0.0  # batch mode: the worst case reserved against --batch-max-cost
    #: the row's recording opens with the request this run sent first: its first reply was
    #: replayed for it, or recorded as the first of a new file (``Completion.opens_recording``).
    #: Its freshness is then known without reading the cassette again, once the row passed
    #: (``freshness.FreshnessBook.sent_as_recorded``).
    recorded_as_sent: bool = False
    #: its items' user_properties, made once when the first item asks (nodes.row_properties)
    properties: tuple[tuple[str, str], ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)  # a plain string (JSON, tests) becomes the enum

    @property
    def usage(self) -> Usage:
        total = Usage()
        for a in self.attempts:
            total = total + a.usage
        return total

    def to_dict(self) -> dict[str, Any]:
        """Plain data, to hand the result to pytest-xdist workers."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowResult:
        attempts = [Attempt(**{**a, "usage": Usage(**a["usage"])}) for a in data.get("attempts", [])]
        return cls(**{**data, "outcome": Outcome(data["outcome"]), "attempts": attempts})


@dataclass(frozen=True)
class Job:
    run: PlanRun
    row: Row
    rerecord: bool = False  # regenerate even when the output passes (record mode "all")

    @functools.cached_property
    def key(self) -> str:
        """Made once: the dispatcher names the job by it seven times a row."""
        return self.run.row_id(self.row).key


class CompletionClient(Protocol):
    """What the dispatcher needs of a model client (:class:`pytest_batchgen.client.ModelClient`)."""

    async def complete(self, key: str, params: dict[str, Any]) -> Completion: ...

    def start_afresh(self, key: str) -> bool:
        """Forget the row's recording, so its next requests are sent live; False when the
        run may not record (no key, record mode ``none``)."""
        ...

    def retry_hint(self, key: str) -> str: ...

    # (optional, looked up with getattr: a client that records nothing needs neither)
    # hold_previous(key): the row's drafts go aside; its recording stays until supersede(key),
    # called once a draft replaced the output (see cassettes.Recordings.hold_previous)

    async def aclose(self) -> None: ...


class RowResults:
    """Each row's result, set once, and waited for until it is.

    A ``concurrent.futures.Future`` a row did this, each with its own Condition, lock and
    lists: 1.5 KB a row, kept to the end of the session (7 MB of a 5,000-row replay's peak).
    Here one dict and one Condition serve every row. Callbacks run as a Future's do: on the
    thread that sets the result (at once for a result already set), and one that raises is
    logged, not propagated."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._order = tuple(keys)
        self._keys = frozenset(self._order)
        self._done: dict[str, RowResult] = {}
        self._changed = threading.Condition()
        self._callbacks: list[Callable[[RowResult], None]] = []

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def done(self, key: str) -> bool:
        return key in self._done

    def pending(self) -> list[str]:
        """The rows without a result yet, in the order given."""
        with self._changed:
            return [key for key in self._order if key not in self._done]

    def set(self, key: str, result: RowResult) -> None:
        """The row's result; a second one for the same row is ignored."""
        with self._changed:
            if key in self._done:
                return
            self._done[key] = result
            self._changed.notify_all()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            _call(callback, result)

    def wait(self, key: str, timeout: float | None = None) -> RowResult:
        """The row's result, once set; ``concurrent.futures.TimeoutError`` after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: key in self._done, timeout):
                raise concurrent.futures.TimeoutError
            return self._done[key]

    def all(self) -> dict[str, RowResult]:
        with self._changed:
            return dict(self._done)

    def on_result(self, callback: Callable[[RowResult], None]) -> None:
        """Call ``callback`` with each result as it is set (at once with those set already)."""
        with self._changed:
            self._callbacks.append(callback)
            already = list(self._done.values())
        for result in already:
            _call(callback, result)


def _call(callback: Callable[[RowResult], None], result: RowResult) -> None:
    try:
        callback(result)
    except Exception:
        logging.getLogger(__name__).exception("a row-result callback failed for %s", result.key)


class BackgroundDispatch:
    """What every dispatcher shares: its rows' results, the thread that generates them, the
    counters of the progress line, and the start / wait / cancel interface that
    :class:`~pytest_batchgen.generation.Generation` drives. Subclasses implement ``_main``
    (run in the thread; every future must be set when it returns)."""

    def __init__(self, jobs: Sequence[Job], *, thread_name: str, secrets: tuple[str, ...] = ()) -> None:
        self.jobs = list(jobs)
        #: the credential values no request body may hold (see :func:`repair_turn`)
        self.secrets = secrets
        self._thread_name = thread_name
        self._row_results = RowResults(j.key for j in self.jobs)
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        self._stop = threading.Event()
        self.stop_reason = ""
        self._prefixes: dict[str, str] = {}
        self.in_flight = 0
        self.done = 0
        self.failed = 0
        self.spent = 0.0
        self.tokens = 0
        self.replies = 0  # replies received, repairs included: tokens come with replies, not rows
        self.note = ""  # more for the progress line (the batch dispatcher's request counts)
        self.budget_stopped = False
        #: spend outside this dispatcher that counts against max_cost (the judge's)
        self.extra_spent: Callable[[], float] = lambda: 0.0

    def cancel(self, reason: str) -> None:
        """Send nothing more (rows not yet sent end as ``skipped``); what is in flight finishes
        and is recorded, so what was paid for is kept."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    def start(self) -> None:
        if not self.jobs or self._thread is not None:
            return
        for job in self.jobs:  # read the shared prefix once per plan, in this thread
            self._prefixes.setdefault(str(job.run.plan.path), shared_prefix(job.run.plan))
        self._thread = threading.Thread(target=self._main, name=self._thread_name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        raise NotImplementedError

    def result(self, key: str, timeout: float | None = None) -> RowResult | None:
        if key not in self._row_results:
            return None
        return self._row_results.wait(key, timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every row ended; True when they have.

        An Event, not ``Thread.join``: a KeyboardInterrupt inside ``Thread.join`` (Python < 3.13)
        marks the thread finished while its requests are still in flight, and the replies they
        paid for would be lost at exit.
        """
        if self._thread is None:
            return True
        return self._finished.wait(timeout)

    def results(self) -> dict[str, RowResult]:
        return self._row_results.all()

    def on_result(self, callback: Callable[[RowResult], None]) -> None:
        """Call ``callback`` with each row's result as it ends, on the thread that ends it."""
        self._row_results.on_result(callback)


#: rows under way at once, per request the run may have in flight (``--batch-concurrency``)
LANES_PER_SLOT = 8


class Dispatcher(BackgroundDispatch):
    """Generates ``jobs`` in a background thread; :meth:`result` waits for one row.

    The rows run in ``LANES_PER_SLOT x concurrency`` lanes, each taking the next row in the
    plan's order when its last one ended, rather than a task a row started at once: the first
    request waits for its connection (the SDK awaits it before anything is written), and the
    event loop then ran every other row up to the pacer, building its prompt, before that
    request left: 0.4 to 0.9 s at 5,000 rows (``benchmarks/timeline.py``). With a lane per slot,
    a slot would idle while its lane's row waits for its draft's checks or a repair's turn;
    with eight, rows still queue at the pacer while a few wait so, and the requests in flight
    are still the pacer's to bound.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        client_factory: Callable[[], CompletionClient],
        *,
        concurrency: int = 8,
        max_attempts: int = 2,
        max_tokens: int = 8192,
        cost: Callable[[Path, str, Usage], float] | None = None,  # (plan, model, usage): each plan its prices
        max_cost: float | None = None,
        pacer: Pacer | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        super().__init__(jobs, thread_name="batchgen-dispatch", secrets=secrets)
        self._client_factory = client_factory
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.max_tokens = max_tokens
        self._cost = cost or (lambda plan, model, usage: 0.0)
        self.max_cost = max_cost
        #: the gate of every request: the account's rate limits and at most ``concurrency`` in flight
        self.pacer = pacer or Pacer(self.concurrency, enabled=False)
        self.checks = DraftChecks()
        self._loop: asyncio.AbstractEventLoop | None = None

    def cancel(self, reason: str) -> None:
        """As :meth:`BackgroundDispatch.cancel`, and a request waiting between two attempts (a
        429's retry-after) ends at once: its retry would be a new request (from any thread)."""
        super().cancel(reason)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits any more
                loop.call_soon_threadsafe(self.pacer.stop_between_attempts)

    # -- the loop ------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._dispatch_all())
        except BaseException as exc:  # never leave a test waiting forever
            for key in self._row_results.pending():
                self._row_results.set(
                    key, RowResult(key, Outcome.ERROR, error=f"dispatcher stopped: {type(exc).__name__}: {exc}")
                )
        finally:
            self._finished.set()

    async def _dispatch_all(self) -> None:
        self._loop = asyncio.get_running_loop()
        # drafts are checked in the loop's executor, as many at once as requests in flight: a
        # check may wait seconds on a judge call (the default, 6 threads on 2 cores, held 32 to 6)
        self._loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="batchgen-checks")
        )
        if self._stop.is_set():  # cancelled before the loop ran
            self.pacer.stop_between_attempts()
        client = self._client_factory()
        jobs = iter(self.jobs)  # shared: each row is taken once, in the plan's order

        async def lane() -> None:
            for job in jobs:
                await self._row(client, self.pacer, job)

        try:
            await asyncio.gather(*(lane() for _ in range(min(len(self.jobs), LANES_PER_SLOT * self.concurrency))))
        finally:
            await client.aclose()

    async def _row(self, client: CompletionClient, sem: Pacer, job: Job) -> None:
        try:
            result = await self._generate(client, sem, job)
            failed = result.outcome in ("failed", "refused") or ended_empty(result)
            if failed and result.attempts and all(a.replayed for a in result.attempts):
                # its recording ended in failure: generate it again, live, where the run may record
                if client.start_afresh(job.key) and not self._stop.is_set():
                    result = await self._generate(client, sem, job)
                else:
                    result.hint = client.retry_hint(job.key) or None
        except Exception as exc:  # a bug must fail the row, not hang it (_generate keeps the attempts)
            result = RowResult(job.key, Outcome.ERROR, error=f"{type(exc).__name__}: {exc}")
        getattr(client, "release", lambda key: None)(job.key)  # its recording leaves memory
        self.done += 1
        if result.outcome.counts_as_failed:
            self.failed += 1
        self._row_results.set(job.key, result)

    async def _generate(self, client: CompletionClient, sem: Pacer, job: Job) -> RowResult:
        """The row's generation; when it raises (an output that cannot be written, say), the row
        ends in error with the attempts made so far, so that what they cost is still counted."""
        result = RowResult(job.key, Outcome.FAILED)
        try:
            return await self._attempts(client, sem, job, result)
        except OSError as exc:
            result.outcome, result.error = Outcome.ERROR, unwritable(job.run, exc)
        except Exception as exc:  # a bug must fail the row, not lose what it paid for
            result.outcome, result.error = Outcome.ERROR, f"{type(exc).__name__}: {exc}"
        if result.attempts and result.attempts[-1].error is None:
            result.attempts[-1].error = result.error
        return result

    async def _attempts(self, client: CompletionClient, sem: Pacer, job: Job, result: RowResult) -> RowResult:
        run, row = job.run, job.row
        output = path = run.output_path(row)
        if output.exists():
            existing = await self.checks.existing(run, row)
            if not existing and not job.rerecord:
                return RowResult(job.key, Outcome.KEPT)
            if not existing or row.complete:
                # re-recording a passing (or complete) row: drafts go aside until one passes, and
                # the recording its output came from stays in its cassette until then
                path = run.plan.draft_path(row)
                getattr(client, "hold_previous", _nothing)(job.key)
        prompt: Prompt = build_prompt(run.plan, row, self.max_tokens, self._prefixes[str(run.plan.path)])
        history: list[dict[str, Any]] = []
        for number in range(1, self.max_attempts + 1):
            attempt = Attempt(number, model=prompt.model)
            result.attempts.append(attempt)
            started = time.monotonic()
            params = prompt.params(history)
            # a recorded reply is replayed whatever the spend and the pace: it costs nothing and
            # takes no budget, so it neither waits for the pacer nor is held to --batch-max-cost
            replay = getattr(client, "replay", None)
            completion: Completion | None = replay(job.key, params) if replay is not None else None
            unrecorded: OSError | None = None
            if completion is not None:
                attempt.seconds = time.monotonic() - started
            else:
                completion, unrecorded, ended = await self._send(job, client, sem, params, attempt, result, started)
                if ended is not None:
                    return ended
            assert completion is not None
            attempt.usage = completion.usage
            result.recorded_as_sent = result.recorded_as_sent or (number == 1 and completion.opens_recording)
            self.replies += 1
            attempt.stop_reason = completion.stop_reason
            attempt.replayed = completion.replayed
            attempt.would_cost = self._cost(run.plan.path, prompt.model, completion.usage)
            attempt.cost = 0.0 if completion.replayed else attempt.would_cost
            self.spent += attempt.cost
            if not completion.replayed:  # (a replay spent nothing: it cannot have reached the cap)
                self._check_budget()  # at once: a request waiting for its retry is not sent either
            u = completion.usage
            self.tokens += u.input_tokens + u.output_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens
            text = normalise_output(completion.text)
            empty = not text.strip()
            # a recording handed over goes with the draft when the draft is checked, and is
            # written here, before the run goes on, when it is not
            recording = completion.unwritten
            finished = completion.stop_reason in FINISHED
            checked = not empty and finished
            if recording is not None and not (checked and self.checks.takes_recordings):
                try:
                    write_recording(recording)
                except RecordingNotWritten as exc:
                    unrecorded = exc.error
                recording = None
            if unrecorded is not None:
                return await self._unrecorded(run, row, path, text, completion, result, attempt, unrecorded)
            if completion.stop_reason == "refusal":
                result.outcome, result.error = Outcome.REFUSED, "the model refused to write this output"
                attempt.error = result.error
                return result
            if empty and completion.stop_reason not in CUT_OFF:
                # never written (over a draft, or an output) nor pasted into a repair turn: the same
                # request again while attempts remain (this one is counted: it was paid for)
                attempt.error = empty_reply(completion.stop_reason)
                if number < self.max_attempts:
                    continue
                result.outcome = Outcome.ERROR
                result.error = empty_ending(run, path, result, completion.stop_reason)
                return result
            # write the draft and check it (not when it was cut off; nothing when it is empty)
            failures = []
            written: Path | None = None
            if checked and recording is not None:
                try:
                    failures = await self.checks.draft(run, row, path, text, True, recording)
                except RecordingNotWritten as exc:
                    return await self._unrecorded(run, row, path, text, completion, result, attempt, exc.error)
                written = path
            elif not empty:
                # an unfinished reply's text waits aside, never at the output (reply_path)
                written = reply_path(run, row, completion.stop_reason, path)
                failures = await self.checks.draft(run, row, written, text, checked)
            if written is not None:
                result.wrote = True
                if written == output:
                    discard_partial(run, row)
            if not finished:  # cut off, or it may be unfinished: its draft is not checked
                result.outcome = Outcome.TRUNCATED
                result.error = truncated(
                    prompt.max_tokens, None if empty else run.plan.rel(run.plan.draft_path(row)), completion.stop_reason
                )
                attempt.error = result.error
                return result
            attempt.failures = [f"{rule.name}: {f.message}" for rule, f in failures]
            if not failures:
                if path != output:
                    _promote_draft(run, path, output, text)
                    getattr(client, "supersede", _nothing)(job.key)  # the held recording goes
                result.outcome = Outcome.PASSED
                return result
            repairable = repairable_failures(failures)
            if not repairable:
                break
            if number < self.max_attempts:
                history += [
                    {"role": "assistant", "content": text.rstrip("\n")},
                    repair_turn(repairable, self.secrets),
                ]
        result.outcome = Outcome.FAILED
        return result

    async def _unrecorded(
        self,
        run: PlanRun,
        row: Row,
        path: Path,
        text: str,
        completion: Completion,
        result: RowResult,
        attempt: Attempt,
        error: OSError,
    ) -> RowResult:
        """The reply came and is paid for, but its recording could not be written: no later run
        could replay it, so its text is kept where the row's checks find it (a rerun then keeps
        an output that passes rather than paying for it again), and the row ends in error. An
        unfinished reply's text is kept in the drafts folder (:func:`reply_path`): no output."""
        path = reply_path(run, row, completion.stop_reason, path)
        kept = False  # this reply's text (``result.wrote`` may be an earlier attempt's draft)
        if completion.stop_reason != "refusal" and text.strip():
            with contextlib.suppress(OSError):
                await self.checks.draft(run, row, path, text, False)
                result.wrote = kept = True
        result.outcome = Outcome.ERROR
        where = f"; its text is kept in {run.plan.rel(path)}" if kept else ""
        result.error = attempt.error = unwritable(run, error, "recorded in") + where
        return result

    async def _send(
        self,
        job: Job,
        client: CompletionClient,
        sem: Pacer,
        params: dict[str, Any],
        attempt: Attempt,
        result: RowResult,
        started: float,
    ) -> tuple[Completion | None, OSError | None, RowResult | None]:
        """One request that goes out live, through the pacer: (the reply, the recording's
        error when the reply could not be recorded, or the row's result when it ends here)."""
        completion: Completion | None = None
        unrecorded: OSError | None = None
        async with sem.slot(params, self._stop.is_set) as slot:
            if getattr(client, "sends", True):  # checked once admitted: the spend grew while it waited
                self._check_budget()
                if self._stop.is_set():
                    return None, None, self._not_sent(result)
            self.in_flight += 1
            try:
                completion = await client.complete(job.key, params)
                slot.settle(completion.usage, completion.replayed)
            except RecordingFailed as exc:  # received and paid for: counted, then the row stops
                completion, unrecorded = exc.completion, exc.error
                slot.settle(completion.usage, completion.replayed)
            except ModelCallError as exc:
                attempt.error = str(exc)
                result.outcome, result.error = Outcome.ERROR, str(exc)
                return None, None, result
            except (SendingStopped, asyncio.CancelledError):
                if not slot.stopped:
                    raise  # not the pacer's stop: the loop itself is going
                if slot.cancelled:
                    _uncancel()
                return None, None, self._not_sent(result)  # its attempts were refused: nothing paid
            finally:
                self.in_flight -= 1
                attempt.seconds = time.monotonic() - started
        return completion, unrecorded, None

    def _check_budget(self) -> None:
        """Stop sending once the estimated spend (the judge's included) reaches the cap."""
        spent = self.spent + self.extra_spent()
        if self.max_cost is not None and spent >= self.max_cost and not self._stop.is_set():
            self.budget_stopped = True
            self.cancel(f"the estimated spend (${spent:.4f}) reached --batch-max-cost ${self.max_cost:g}")

    def _not_sent(self, result: RowResult) -> RowResult:
        """The row's current attempt was not sent (or its retry was not) because the run stopped."""
        result.attempts.pop()
        result.error = f"not sent: {self.stop_reason}"
        # a row stopped before a repair keeps its draft for the checks to judge
        result.outcome = Outcome.FAILED if result.attempts else Outcome.SKIPPED
        result.budget_skipped = self.budget_stopped and not result.attempts
        return result


def _uncancel() -> None:
    """The pacer cancelled this task to end its request, and the row handles that: the task
    is not being cancelled any more (``asyncio.timeout`` counts cancellations; Python 3.11+)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


class InlineReplay(Dispatcher):
    """A replay-only run (record mode ``none``) in the pytest process: each row is generated
    when a test first asks for it, on the asking thread, from its recording; no background
    thread. (Where the run forks, the sending process replays the rows ahead instead, on the
    other core: :func:`pytest_batchgen.sender.why_not`.)

    Replayed calls never wait on the network, so generating ahead in a thread bought nothing
    and cost thread hand-offs under the GIL: a 1,000-row replay took 5.7 s of CPU and 26,000
    context switches threaded, 4.9 s and 7,000 inline (the child's ``wait4`` rusage of the
    replay ``bench_whole_run.py`` times; at 5,000 rows, 224 MB against 209 MB peak).
    The rows go through the same ``_row`` as live ones, on one private event loop, so a replay
    gives exactly what the threaded dispatcher gave.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jobs = {job.key: job for job in self.jobs}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: CompletionClient | None = None
        self._lock = threading.Lock()  # an xdist controller and a test could both ask

    def start(self) -> None:
        for job in self.jobs:
            self._prefixes.setdefault(str(job.run.plan.path), shared_prefix(job.run.plan))

    def _ensure(self, key: str) -> None:
        results = self._row_results
        if key not in results or results.done(key):
            return
        with self._lock:
            if results.done(key):
                return
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._client = self._client_factory()
            try:
                self._loop.run_until_complete(self._row(self._client, self.pacer, self._jobs[key]))  # type: ignore[arg-type]
            except BaseException as exc:  # never leave a test without its row
                results.set(key, RowResult(key, Outcome.ERROR, error=f"replay stopped: {type(exc).__name__}: {exc}"))
                if not isinstance(exc, Exception):  # Ctrl-C: the row's task is abandoned with its loop
                    self._loop.close()
                    self._loop = None
                    raise

    def result(self, key: str, timeout: float | None = None) -> RowResult | None:
        self._ensure(key)
        return super().result(key, timeout)

    def join(self, timeout: float | None = None) -> bool:
        for job in self.jobs:
            self._ensure(job.key)
        with self._lock:
            if self._loop is not None and not self._loop.is_closed():
                if self._client is not None:
                    self._loop.run_until_complete(self._client.aclose())
                self._loop.close()
        self._finished.set()
        return True
