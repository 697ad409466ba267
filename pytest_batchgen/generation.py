"""The generation controller: which rows are generated, and the dispatcher's life in a run.

One object starts the dispatcher, waits for one row (what an item does) or for all of them
(what the xdist controller and the end of the session do), keeps the progress line drawn
while it waits, and cancels. The plain run's plugin and the xdist controller both use it, so
starting and waiting are written once. The SDK and vcrpy are imported only in
:func:`make_dispatcher`, never on the validate-only path.
"""

from __future__ import annotations

import concurrent.futures
import shlex
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from .fsutil import file_in_the_way, write_problem
from .plan import Row
from .pricing import PlanPrices
from .rowid import plan_option
from .run import PlanRun
from .settings import Settings

if TYPE_CHECKING:
    from .dispatch import CompletionClient, Dispatcher, Job, RowResult
    from .recording import Recorder
    from .report import Progress
    from .sender import RemoteDispatch
    from .state import BatchState

#: how often a waiting item redraws the progress line
POLL_SECONDS = 0.25


def wants_generation(run: PlanRun, row: Row, record_mode: str, stale: bool = False) -> bool:
    """Pending rows are generated; in record mode ``all``, so are complete rows that were
    recorded before (re-recording them; a passing output is kept until a new draft passes);
    and so are ``stale`` rows (``--batch-regenerate-stale``: see :func:`wants`)."""
    if not row.complete or stale:
        return True
    return record_mode == "all" and run.plan.cassette_path(row).exists()


def wants(state: BatchState, run: PlanRun, row: Row) -> bool:
    """:func:`wants_generation` with the session's record mode and the row's freshness."""
    from .freshness import regenerates

    return wants_generation(run, row, state.settings.record_mode, regenerates(state, run.plan, row))


T = TypeVar("T")


class PerRow(Mapping[str, T]):
    """A value for each row, made each time it is asked for: its cassette's path, that path as
    a message shows it, the command that records the row again. Made for every row up front,
    they were held to the session's end (about 0.6 KB a row) to be read once or twice a row."""

    def __init__(self, jobs: Mapping[str, Job], make: Callable[[Job], T]) -> None:
        self._jobs = jobs
        self._make = make

    def __getitem__(self, key: str) -> T:
        return self._make(self._jobs[key])

    def __contains__(self, key: object) -> bool:
        return key in self._jobs

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)


def rerecord_hint(run: PlanRun, row: Row, options: str = "") -> str:
    """The command that re-records one row (printed by replay misses), with the run's
    ``options`` that shape its request (:meth:`~pytest_batchgen.settings.Settings.command_options`)."""
    row_id = run.row_id(row)
    return f"pytest{options} {plan_option(row_id.plan)} --batch-record-mode all {row_id.command_node()}"


def resume_command(settings: Settings) -> str:
    """The command that collects the Message Batches a stopped run left running."""
    plans = " ".join(f"--batch-plan {shlex.quote(str(p))}" for p in settings.plans)
    phases = "".join(f" --batch-phase {shlex.quote(str(p))}" for p in settings.phases)
    options = settings.command_options()
    return f"pytest{options} {plans}{phases} --batch-api batches"


def make_dispatcher(
    settings: Settings,
    prices: PlanPrices,
    rows: Sequence[tuple[PlanRun, Row]],
    afresh: Collection[str] = (),
    *,
    replay_ahead: bool = False,
    hand_over_recordings: bool = False,
) -> Dispatcher:
    """Build the dispatcher, its client and its recorder for ``rows``.

    A replay-only run (record mode ``none``) replays each row when its first test asks, on the
    asking thread (:class:`~pytest_batchgen.dispatch.InlineReplay`); with ``replay_ahead`` (the
    sending process, whose rows no test asks for) the rows are replayed on the dispatcher's
    lanes, several drafts waiting for the pytest process's verdicts at once. With
    ``hand_over_recordings`` (the sending process of a live run) the recorder writes no new
    file: each reply's recording goes with its draft to the pytest process, which writes both
    (:attr:`~pytest_batchgen.recording.Recorder.hand_over`).

    The rows keyed in ``afresh`` (stale ones, ``--batch-regenerate-stale``) are re-recorded as
    record mode ``all`` re-records a row: their old recording is not replayed, and a new draft
    replaces a passing output only once it passes; the old recording stays in the file, ahead
    of the new replies, until then (``Recordings.hold_previous``)."""
    from .cassettes import Recordings, ReplayClient
    from .client import ClientSettings, ModelClient
    from .dispatch import Dispatcher, InlineReplay, Job
    from .pacing import Pacer

    mode = settings.record_mode
    jobs = [Job(run, row, rerecord=mode == "all" or run.row_id(row).key in afresh) for run, row in rows]
    by_key = {j.key: j for j in jobs}
    paths = PerRow(by_key, lambda j: j.run.plan.cassette_path(j.row))
    options = settings.command_options()
    hints = PerRow(by_key, lambda j: rerecord_hint(j.run, j.row, options))
    api_key = settings.api_key
    secrets = settings.secrets  # what no cassette may hold: the key and ANTHROPIC_AUTH_TOKEN
    recorder: Recorder | None = None
    if mode == "none":  # replay only: the recordings are read without vcrpy (see cassettes.py)
        recordings = Recordings(paths, mode, hints, secrets)
    else:
        from .recording import Recorder

        recordings = recorder = Recorder(paths, mode, hints, secrets)
    recordings.labels = PerRow(by_key, lambda j: j.run.plan.rel(paths[j.key]))
    for key in afresh:
        if key in paths:
            recordings.start_afresh(key)  # not replayed; replaced once a new draft replaces the output
    if settings.api == "batches" and recorder is not None and api_key:
        # Message Batches; a run that may not record replays through the messages path below
        from .batches import make_batch_dispatcher

        return make_batch_dispatcher(settings, prices, jobs, recorder, resume_command(settings))  # type: ignore[return-value]
    if recorder is not None:
        recorder.hand_over = hand_over_recordings
    pacer = Pacer(settings.concurrency, enabled=settings.pacing)
    if recorder is not None and settings.pacing and settings.remember_limits:  # a run that may call the API
        from .limitstore import seed_pacer

        for model in sorted({job.row.model for job in jobs}):  # the API limits each model class apart
            seed_pacer(pacer, model, settings.credential)
    if recorder is None:  # replay only: no SDK and no vcrpy (issue 12)
        has_key = settings.credential is not None
        client_factory: Callable[[], CompletionClient] = lambda: ReplayClient(recordings, has_key)  # noqa: E731
    else:
        client_settings = ClientSettings(
            max_retries=settings.max_retries,
            timeout=settings.timeout,
            total=settings.total_timeout,
            api_key=api_key,
            concurrency=settings.concurrency,
        )
        client_factory = lambda: ModelClient(client_settings, recorder, pacer)  # noqa: E731
    kind = InlineReplay if mode == "none" and not replay_ahead else Dispatcher
    return kind(
        jobs,
        client_factory,
        concurrency=settings.concurrency,
        max_attempts=settings.max_attempts,
        max_tokens=settings.max_tokens,
        cost=lambda plan, model, usage: prices.of(plan).cost(model, usage),
        max_cost=settings.max_cost,
        pacer=pacer,
        secrets=settings.secrets,  # scrubbed from repair turns: no request carries the key
    )


def check_writable(settings: Settings, rows: Sequence[tuple[PlanRun, Row]]) -> None:
    """Before anything is sent: each output folder of ``rows``, and each cassette folder when
    the run may record, can be written (made if missing); a usage error naming them otherwise.
    A reply is paid for once it comes, and one that cannot be kept is paid for again."""
    may_record = settings.record_mode != "none" and settings.credential is not None
    folders: dict[Path, tuple[PlanRun, str]] = {}
    for run, row in rows:
        folders.setdefault(run.output_path(row).parent, (run, "output"))
        if may_record:
            folders.setdefault(run.plan.cassette_dir, (run, "cassette"))
    problems = []
    for folder, (run, what) in folders.items():
        why = write_problem(folder)
        blocking = None if why is None else file_in_the_way(folder.resolve())
        if blocking is not None:  # "File exists": no permission would fix it
            problems.append(
                f"{run.plan.rel(run.plan.path)}: the {what} folder {run.plan.rel(folder)}/ cannot be made: "
                f"{run.plan.rel(blocking)} is a file, not a folder; move or rename it before generating "
                "(nothing was sent), or check the outputs with --batch-validate-only"
            )
        elif why is not None:
            problems.append(
                f"{run.plan.rel(run.plan.path)}: the {what} folder {run.plan.rel(folder)}/ cannot be written ({why}): "
                "make it writable before generating (nothing was sent), or check the outputs with --batch-validate-only"
            )
    if problems:
        raise pytest.UsageError("\n".join(problems))


def remember_limits(dispatcher: object) -> None:
    """Keep the account's budgets as the requests left them, for the next run's first wave
    (see :mod:`.limitstore`); nothing when the run learnt none or was asked not to."""
    pacer = getattr(dispatcher, "pacer", None)  # Message Batches are not paced
    if pacer is not None and getattr(pacer, "accounts", None):
        from .limitstore import remember_pacer

        remember_pacer(pacer)


class Generation:
    """The dispatcher of this process and the progress line drawn while someone waits on it."""

    def __init__(self, dispatcher: Dispatcher | RemoteDispatch, progress: Progress | None) -> None:
        self.dispatcher = dispatcher
        self.progress = progress

    @classmethod
    def start_for(cls, config: pytest.Config, state: BatchState, rows: Sequence[tuple[PlanRun, Row]]) -> Generation:
        """Start generating ``rows`` now, with the progress line of ``config``'s terminal."""
        from .baseline import capture
        from .freshness import regenerates
        from .terminal import progress_line

        check_writable(state.settings, rows)  # before anything is sent
        afresh = {run.row_id(row).key for run, row in rows if regenerates(state, run.plan, row)}
        capture(state, rows, afresh)  # the outputs as they were: the baselines of the report
        if state.sender is not None:  # the forked sending process generates them (sender.py)
            dispatcher: Dispatcher | RemoteDispatch = state.sender.dispatch(rows, afresh, state.settings.concurrency)
        else:
            dispatcher = make_dispatcher(state.settings, state.prices, rows, afresh)
        generation = cls(dispatcher, progress_line(config))
        judge, dispatcher = state.judge, generation.dispatcher
        if judge is not None:  # one --batch-max-cost for generation and judge calls
            dispatcher.extra_spent = lambda: judge.spent
            judge.other_spent = lambda: dispatcher.spent
        generation.dispatcher.start()
        return generation

    def redraw(self) -> None:
        """Draw the progress line if it changed (and is due, off a terminal)."""
        if self.progress is not None:
            self.progress.update(self.dispatcher)

    def wait_for(self, key: str) -> RowResult | None:
        """Block until the row ``key`` ended (None when it is not generated in this run)."""
        waited = False
        while True:
            try:
                result = self.dispatcher.result(key, timeout=POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                waited = True
                self.redraw()
                continue
            if waited:
                self.redraw()
            return result

    def wait_all(self) -> None:
        """Block until every row ended. Ctrl-C sends nothing more but lets the requests in
        flight finish and be recorded (they are paid for); a second Ctrl-C aborts."""
        try:
            while not self.dispatcher.join(POLL_SECONDS):
                self.redraw()
        except KeyboardInterrupt:
            self.cancel("the run was interrupted before this row was sent")
            self.dispatcher.join()
            raise
        self.redraw()

    def finish(self, stopped: bool) -> None:
        """At the end of the session: stop sending when the run was stopped (``-x``, Ctrl-C,
        a usage error), then wait for the requests in flight, so their replies are recorded."""
        from .fsutil import sync_deferred

        if stopped:
            self.cancel("the run was stopped before this row was sent")
        self.dispatcher.join()
        self.remember_limits()
        sync_deferred()  # the outputs and recordings are on disk before the plan says complete

    def remember_limits(self) -> None:
        remember_limits(self.dispatcher)

    def cancel(self, reason: str) -> None:
        self.dispatcher.cancel(reason)

    def results(self) -> dict[str, RowResult]:
        return self.dispatcher.results()

    @property
    def budget_note(self) -> str:
        d = self.dispatcher
        # batch mode: batches left running after Ctrl-C; requests dropped from the journal; rows
        # left to another live run of the plan
        notes = [getattr(d, "resume_note", ""), getattr(d, "journal_note", ""), getattr(d, "elsewhere_note", "")]
        if d.budget_stopped:
            skipped = sum(r.budget_skipped for r in d.results().values())
            then = "the rows not sent were skipped" if skipped else "every row had been sent"
            notes.insert(0, f"stopped dispatching: {d.stop_reason}; {then}")
        return "\n".join(n for n in notes if n)


class GenerationPlugin:
    """Registered in a plain run that may call the model: starts generating the selected
    pending rows as soon as collection ends (after ``-k``, ``-m`` and node ids), and waits
    for the requests in flight at the end of the session, before the plan is recorded."""

    def __init__(self, config: pytest.Config, state: BatchState) -> None:
        self.config = config
        self.state = state
        self.generation: Generation | None = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Fires once the items are final; the rows picked are those with a selected item."""
        from .nodes import row_of

        state = self.state
        wanted = {run.row_id(row): (run, row) for run, row in state.selected() if wants(state, run, row)}
        picked = []
        for item in session.items:
            found = row_of(item)
            if found is not None:
                pair = wanted.pop(found[0].row_id(found[1]), None)
                if pair is not None:
                    picked.append(pair)
        if picked:
            try:
                self.generation = state.generation = Generation.start_for(self.config, state, picked)
            except pytest.UsageError:  # a folder that cannot be written: nothing is sent
                if state.sender is not None:
                    state.sender.close()
                raise
        elif state.sender is not None:  # nothing to send after all: the child exits
            state.sender.close()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Between tests (outside their output capture): the line follows rows as they end,
        not only while a test waits for its row."""
        if self.generation is not None and report.when == "teardown":
            self.generation.redraw()

    def pytest_keyboard_interrupt(self) -> None:
        if self.generation is not None:
            self.generation.cancel("the run was interrupted before this row was sent")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Before the plan is recorded (the tally's ``pytest_sessionfinish``)."""
        if self.generation is not None:
            stopped = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop or session.shouldfail)
            self.generation.finish(stopped)
            self.generation.redraw()  # the final count
