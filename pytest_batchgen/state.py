"""The session's state, kept in ``config.stash``: the settings, the plans and the generation.

Only the pytest glue (plugin, nodes and the concern plugins) reads it; the core modules take
what they need as arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:
    from .dispatch import RowResult
    from .freshness import FreshnessBook
    from .judge import JudgeService
    from .plan import Row
    from .pricing import Prices
    from .run import PlanRun
    from .selection import Selection
    from .sender import SenderProcess
    from .settings import Settings


class GenerationSource(Protocol):
    """Where the items get a row's generation result: the dispatcher of this process
    (:class:`pytest_batchgen.generation.Generation`) or, on an xdist worker, the controller's
    results (:class:`pytest_batchgen.xdist.ControllerResults`)."""

    def wait_for(self, key: str) -> RowResult | None: ...

    def results(self) -> dict[str, RowResult]: ...

    @property
    def budget_note(self) -> str: ...


@dataclass
class BatchState:
    settings: Settings
    runs: tuple[PlanRun, ...]
    prices: Prices
    generation: GenerationSource | None = None
    selection: Selection | None = None  # rows and items named on the command line
    judge: JudgeService | None = None  # the judge of 'Judge:' checklist lines (judge.py)
    freshness: FreshnessBook | None = None  # each row's freshness, read once (freshness.book_of)
    sender: SenderProcess | None = None  # the forked process that sends this run's requests (sender.py)
    sent_from: str = ""  # where this run's requests are sent from, and why (the report header)
    #: what went wrong at the very end (a report file that could not be written): warning lines
    #: of the terminal summary, which comes after every ``pytest_sessionfinish``
    end_warnings: list[str] = field(default_factory=list)

    @property
    def several_plans(self) -> bool:
        return len(self.runs) > 1

    def run_for(self, plan_path: Path) -> PlanRun | None:
        for run in self.runs:
            if run.plan.path == plan_path:
                return run
        return None

    def selected(self) -> Iterator[tuple[PlanRun, Row]]:
        """Every row of the selected phases of every plan, in plan order."""
        for run in self.runs:
            for row in run.rows:
                yield run, row

    def result(self, run: PlanRun, row: Row) -> RowResult | None:
        """The row's generation result, waiting for it when it is still being generated."""
        if self.generation is None:
            return None
        return self.generation.wait_for(run.row_id(row).key)

    def results(self) -> dict[str, RowResult]:
        return self.generation.results() if self.generation is not None else {}

    @property
    def budget_note(self) -> str:
        return self.generation.budget_note if self.generation is not None else ""


state_key = pytest.StashKey[BatchState]()


def state_of(config: pytest.Config) -> BatchState | None:
    """The session's state; None when no ``--batch-plan`` was given."""
    return config.stash.get(state_key, None)
