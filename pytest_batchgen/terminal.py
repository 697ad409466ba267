"""The terminal side of reporting: the run summary, GitHub annotations and the progress line.

The numbers come from :mod:`pytest_batchgen.report`; this module only decides where they are
drawn. Not registered on xdist workers nor in a dry run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from .report import Progress, github_annotations, github_workspace, summary_lines
from .state import BatchState
from .tally import TallyPlugin


class TerminalPlugin:
    """The ``pytest-batchgen`` section after the run."""

    def __init__(self, state: BatchState, tally: TallyPlugin) -> None:
        self.state = state
        self.tally = tally

    def pytest_report_header(self) -> list[str]:
        """Where a run that may generate sends its requests from, and why (see sender.py)."""
        return [f"batchgen: {self.state.sent_from}"] if self.state.sent_from else []

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """After every ``pytest_sessionfinish``: the plan is already recorded. ``--collect-only``
        ran no row: a table of them all, each "pending -> pending", followed the item list."""
        state = self.state
        if state.settings.collect_only:
            return
        tr = terminalreporter
        tr.section("pytest-batchgen")
        reports = self.tally.row_reports()
        for line in summary_lines(reports, state.prices, state.budget_note):
            tr.write_line(line)
        for report in reports:
            if report.generation is not None and report.generation.hint and report.verdict == "failed":
                tr.write_line(f"{report.row.filename}: {report.generation.hint}")
        for run in state.runs:
            if state.settings.readonly:
                action = "plan unchanged (read-only)"
            elif run.plan.path in self.tally.not_recorded:
                action = f"plan not updated: {self.tally.not_recorded[run.plan.path]}"
            elif self.tally.interrupted:
                action = "plan unchanged (interrupted: the next run keeps the outputs and replays the recorded replies)"
            else:
                action = "plan updated" if self.tally.recorded.get(run.plan.path) else "plan unchanged"
            tr.write_line(f"{run.plan.rel(run.plan.path)}: {action}")
        if os.environ.get("GITHUB_ACTIONS") == "true":
            # relative to the checkout, not the rootdir: GitHub attaches them to the diff by that path
            for line in github_annotations(reports, state.settings.rootdir, github_workspace()):
                tr.write_line(line)
        from .baseline import summary_lines as change_lines  # freshness and regenerated rows

        lines = change_lines(state, reports)
        if lines:
            tr.write_sep("-", "pytest-batchgen: freshness")
            for line in lines:
                tr.write_line(line)
        for line in state.end_warnings:  # last: the line a reader of a CI log sees
            tr.write_line(f"WARNING: {line}", yellow=True, bold=True)


def progress_line(config: pytest.Config) -> Progress | None:
    """The live line while generating, drawn outside pytest's output capture.

    The line is drawn while a test waits, i.e. while pytest captures output, so it steps
    outside the capture; on a terminal it is redrawn in place on a line of its own."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return None
    capman = config.pluginmanager.get_plugin("capturemanager")

    def uncaptured(fn: Callable[[str], None]) -> Callable[[str], None]:
        def call(text: str) -> None:
            if capman is None:
                fn(text)
                return
            with capman.global_and_fixture_disabled():
                fn(text)

        return call

    def write(text: str) -> None:
        # on a line of its own: after -q's dots too (ensure_newline() acts only after a path)
        if tr._tw.width_of_current_line:
            tr._tw.line()
        tr._tw.line(text)
        tr.currentfspath = None  # pytest starts a fresh line for the next results

    def rewrite(text: str) -> None:
        tr.ensure_newline()  # leave the results line as it is; draw on a line of its own
        tr.rewrite(text, erase=True)
        tr.currentfspath = None

    return Progress(uncaptured(write), uncaptured(rewrite) if tr.isatty() else None)
