"""``--batch-report PATH``: the JSON report, registered only when the option is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from .baseline import annotate_json
from .judge import has_judge_rules
from .report import json_report, write_json
from .state import BatchState
from .tally import TallyPlugin


class JsonReportPlugin:
    """Writes the report at the end of the session (also in read-only runs)."""

    def __init__(self, state: BatchState, tally: TallyPlugin, path: Path) -> None:
        self.state = state
        self.tally = tally
        self.path = path

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """After the plan was recorded, so the statuses after are the plan's."""
        settings = self.state.settings
        meta = {
            "record_mode": settings.record_mode,
            "validate_only": settings.validate_only,
            "readonly": settings.readonly,
            "exit_status": int(session.exitstatus),  # as the tally left it (a plan not written fails the run)
        }
        judged = any(has_judge_rules(run.rules) for run in self.state.runs)
        reports = self.tally.row_reports()
        document = json_report(reports, self.state.prices, meta=meta, budget_note=self.state.budget_note, judged=judged)
        annotate_json(document, self.state, reports)  # each row's freshness; baselines
        for entry in document["plans"]:  # a plan that could not be written says why (the key only then)
            why = next((m for p, m in self.tally.not_recorded.items() if self._rel(p) == entry["plan"]), None)
            if why is not None:
                entry["not_updated"] = why
        try:
            write_json(self.path, document, settings.secrets, user_file=True)
        except OSError as exc:  # checked up front, but a disk can fill or a folder go read-only
            self.state.end_warnings.append(
                f"--batch-report {self.path}: the report was not written ({exc.strerror or exc}); "
                "the run's result is unchanged"
            )

    def _rel(self, path: Path) -> str:
        run = next(r for r in self.state.runs if r.plan.path == path)
        return run.plan.rel(path)
