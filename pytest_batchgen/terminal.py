"""The terminal side of reporting: the run summary, GitHub annotations and the progress line.

The numbers come from :mod:`pytest_batchgen.report`; this module only decides where they are
drawn. Not registered on xdist workers nor in a dry run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

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
    outside the capture. On a terminal it is a :class:`LiveLine`, redrawn in place on a line of
    its own, and the final count a plain line; elsewhere every line is a plain line."""
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

    # pytest 8 has isatty as a bool, pytest 9 as a bool that may be called
    live = LiveLine(tr._tw) if bool(tr.isatty) and os.environ.get("TERM") != "dumb" else None
    if live is not None:
        config.add_cleanup(live.close)

    def write(text: str) -> None:
        if live is not None:
            live.close()  # the final count: pytest's writes go straight to the terminal again
        # on a line of its own: after -q's dots too (ensure_newline() acts only after a path)
        if tr._tw.width_of_current_line:
            tr._tw.line()
        tr._tw.line(text)
        tr.currentfspath = None  # pytest starts a fresh line for the next results

    return Progress(uncaptured(write), uncaptured(live.draw) if live is not None else None)


#: ANSI: erase to the end of the line; the cursor one line up; to column n (from 1)
ERASE, UP, COLUMN = "\x1b[K", "\x1b[A", "\x1b[{}G"


class LiveLine:
    """The progress line on a terminal, redrawn in place under pytest's own line.

    pytest's current line (``plan.md ....``, or the item's id with ``-v``) goes on growing
    while the line is shown: it is drawn on the next line (on the current one when that is
    empty), cut to the terminal's width, and the cursor stays at its end. Every write of pytest's
    terminal writer first takes it down (erases it and puts the cursor back where pytest left
    it), so no result is written over it and none is split; the next update draws it again."""

    def __init__(self, tw: Any) -> None:
        self.tw = tw
        self.file = tw._file  # the terminal; pytest's writer writes through a _Guard until close()
        self.shown = False
        self.text = ""
        self.below = False  # drawn on the line under pytest's
        self.column = 0  # where pytest's cursor was
        self.closed = False
        tw._file = _Guard(self.file, self)

    def draw(self, text: str) -> None:
        width = self.tw.fullwidth
        text = text[: max(width - 1, 1)]  # never wrapped: the last column is left free
        if self.shown:
            if text != self.text:
                self.file.write("\r" + text + ERASE)
                self.file.flush()
                self.text = text
            return
        if self.closed:
            return
        used = self.tw.width_of_current_line
        if used < 0 or (used and used % width == 0):
            return  # pytest's line ends in the last column: its cursor could not be put back
        self.below, self.column = used > 0, used % width
        self.file.write(("\n" if self.below else "\r") + text + ERASE)
        self.file.flush()
        self.shown, self.text = True, text

    def take_down(self) -> None:
        if not self.shown:
            return
        self.shown = False
        back = UP + COLUMN.format(self.column + 1) if self.below else ""
        self.file.write("\r" + ERASE + back)

    def close(self) -> None:
        self.take_down()
        self.closed = True
        if isinstance(self.tw._file, _Guard):
            self.tw._file = self.file


class _Guard:
    """pytest's terminal stream, taking the live line down before anything is written."""

    def __init__(self, file: Any, line: LiveLine) -> None:
        self._file = file
        self._line = line

    def write(self, text: str) -> int:
        self._line.take_down()
        return int(self._file.write(text) or 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)
