"""The generation controller: which rows are generated, and the dispatcher's life in a run.

One object starts the dispatcher, waits for one row (what an item does) or for all of them
(what the xdist controller and the end of the session do), keeps the progress line drawn
while it waits, and cancels. The plain run's plugin and the xdist controller both use it, so
starting and waiting are written once. The SDK and vcrpy are imported only in
:func:`make_dispatcher`, never on the validate-only path.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

from .plan import Row
from .pricing import PriceTable
from .run import PlanRun
from .settings import Settings

if TYPE_CHECKING:
    from .dispatch import Dispatcher, RowResult
    from .report import Progress
    from .state import BatchState

#: how often a waiting item redraws the progress line
POLL_SECONDS = 0.25


def wants_generation(run: PlanRun, row: Row, record_mode: str) -> bool:
    """Pending rows are generated; in record mode ``all``, so are complete rows that were
    recorded before (re-recording them; a passing output is kept until a new draft passes)."""
    if not row.complete:
        return True
    return record_mode == "all" and run.plan.cassette_path(row).exists()


def rerecord_hint(run: PlanRun, row: Row) -> str:
    """The command that re-records one row (printed by replay misses)."""
    plan = run.plan.rel(run.plan.path)
    return f"pytest --batch-plan {plan} --batch-record-mode all '{run.row_id(row).node_id(run.plan.rootdir)}'"


def make_dispatcher(settings: Settings, prices: PriceTable, rows: Sequence[tuple[PlanRun, Row]]) -> Dispatcher:
    """Build the dispatcher, its client and its recorder for ``rows``."""
    from .client import ClientSettings, ModelClient
    from .dispatch import Dispatcher, Job
    from .pacing import Pacer
    from .recording import Recorder

    mode = settings.record_mode
    jobs = [Job(run, row, rerecord=mode == "all") for run, row in rows]
    paths = {j.key: j.run.plan.cassette_path(j.row) for j in jobs}
    hints = {j.key: rerecord_hint(j.run, j.row) for j in jobs}
    api_key = settings.api_key
    recorder = Recorder(paths, mode, hints, secrets=(api_key,) if api_key else ())
    recorder.labels = {j.key: j.run.plan.rel(paths[j.key]) for j in jobs}
    client_settings = ClientSettings(
        max_retries=settings.max_retries,
        timeout=settings.timeout,
        # replay needs no key; the placeholder never leaves this process (the recorder answers)
        api_key=api_key or ("replay-without-a-key" if mode == "none" else None),
    )
    pacer = Pacer(settings.concurrency, enabled=settings.pacing)
    return Dispatcher(
        jobs,
        lambda: ModelClient(client_settings, recorder, pacer),
        concurrency=settings.concurrency,
        max_attempts=settings.max_attempts,
        max_tokens=settings.max_tokens,
        cost=prices.cost,
        max_cost=settings.max_cost,
        pacer=pacer,
    )


class Generation:
    """The dispatcher of this process and the progress line drawn while someone waits on it."""

    def __init__(self, dispatcher: Dispatcher, progress: Progress | None) -> None:
        self.dispatcher = dispatcher
        self.progress = progress

    @classmethod
    def start_for(cls, config: pytest.Config, state: BatchState, rows: Sequence[tuple[PlanRun, Row]]) -> Generation:
        """Start generating ``rows`` now, with the progress line of ``config``'s terminal."""
        from .terminal import progress_line

        generation = cls(make_dispatcher(state.settings, state.prices, rows), progress_line(config))
        generation.dispatcher.start()
        return generation

    def _redraw(self) -> None:
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
                self._redraw()
                continue
            if waited:
                self._redraw()
            return result

    def wait_all(self) -> None:
        """Block until every row ended. Ctrl-C sends nothing more but lets the requests in
        flight finish and be recorded (they are paid for); a second Ctrl-C aborts."""
        try:
            while not self.dispatcher.join(POLL_SECONDS):
                self._redraw()
        except KeyboardInterrupt:
            self.cancel("the run was interrupted before this row was sent")
            self.dispatcher.join()
            raise
        self._redraw()

    def finish(self, stopped: bool) -> None:
        """At the end of the session: stop sending when the run was stopped (``-x``, Ctrl-C,
        a usage error), then wait for the requests in flight, so their replies are recorded."""
        if stopped:
            self.cancel("the run was stopped before this row was sent")
        self.dispatcher.join()

    def cancel(self, reason: str) -> None:
        self.dispatcher.cancel(reason)

    def results(self) -> dict[str, RowResult]:
        return self.dispatcher.results()

    @property
    def budget_note(self) -> str:
        d = self.dispatcher
        if d.budget_stopped:
            return f"stopped dispatching: {d.stop_reason}; the rows not sent were skipped"
        return ""


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
        mode = state.settings.record_mode
        wanted = {run.row_id(row): (run, row) for run, row in state.selected() if wants_generation(run, row, mode)}
        picked = []
        for item in session.items:
            found = row_of(item)
            if found is not None:
                pair = wanted.pop(found[0].row_id(found[1]), None)
                if pair is not None:
                    picked.append(pair)
        if picked:
            self.generation = state.generation = Generation.start_for(self.config, state, picked)

    def pytest_keyboard_interrupt(self) -> None:
        if self.generation is not None:
            self.generation.cancel("the run was interrupted before this row was sent")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Before the plan is recorded (the tally's ``pytest_sessionfinish``)."""
        if self.generation is not None:
            stopped = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop or session.shouldfail)
            self.generation.finish(stopped)
