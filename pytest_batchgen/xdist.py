"""pytest-xdist: the controller generates each row once; the workers check its results.

The controller runs no test. It learns the selected items when the first worker reports its
collection (after ``-k`` and node ids), generates those rows before the items are scheduled,
and writes the results to a file the workers read, so each row is generated exactly once and
its checks see the final output. Registered only under xdist: :class:`XdistController` on the
controller, and :class:`ControllerResults` is the workers' generation source.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .generation import Generation, wants
from .report import write_json
from .state import BatchState

if TYPE_CHECKING:
    from .dispatch import RowResult

#: the key under which the controller hands the results file to its workers
WORKERINPUT_KEY = "batchgen_results_file"


class XdistController:
    """On the controller: generate the selected rows once, for every worker."""

    def __init__(self, config: pytest.Config, state: BatchState) -> None:
        self.config = config
        self.state = state
        fd, name = tempfile.mkstemp(prefix="pytest-batchgen-results-", suffix=".json")
        os.close(fd)
        self.results_file = Path(name)
        self.done = False

    def pytest_configure_node(self, node: Any) -> None:
        """Fires for each worker before it starts: tell it where the results will be."""
        node.workerinput[WORKERINPUT_KEY] = str(self.results_file)

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Fires per worker once it collected; the first one's ids select the rows. Blocking
        here holds back scheduling, so no worker checks a row before it was generated."""
        state = self.state
        settings = state.settings
        if self.done or not settings.may_generate:
            return
        self.done = True
        rootdir, several = settings.rootdir, state.several_plans
        rows = [
            (run, row)
            for run, row in state.selected()
            if wants(state, run, row) and any(run.row_id(row).matches(nodeid, rootdir, several) for nodeid in ids)
        ]
        if not rows:
            return
        generation = Generation.start_for(self.config, state, rows)
        state.generation = generation
        generation.wait_all()
        generation.remember_limits()
        write_json(self.results_file, {k: r.to_dict() for k, r in generation.results().items()})

    def pytest_unconfigure(self) -> None:
        self.results_file.unlink(missing_ok=True)


class ControllerResults:
    """On a worker: the controller's generation results, read once from its file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._results: dict[str, RowResult] | None = None

    def results(self) -> dict[str, RowResult]:
        if self._results is None:
            from .dispatch import RowResult

            self._results = {}
            if self.path is not None:
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
                except (OSError, ValueError):
                    data = {}
                self._results = {k: RowResult.from_dict(v) for k, v in data.items()}
        return self._results

    def wait_for(self, key: str) -> RowResult | None:
        return self.results().get(key)

    @property
    def budget_note(self) -> str:
        return ""

    @classmethod
    def of_worker(cls, config: pytest.Config) -> ControllerResults:
        sent = config.workerinput.get(WORKERINPUT_KEY)  # type: ignore[attr-defined]
        return cls(Path(sent) if sent else None)
