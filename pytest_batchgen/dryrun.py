"""``--batch-dry-run``: each selected row's freshness and estimated cost, then each row to generate's
model and resolved prompt; run and write nothing."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from .freshness import freshness_table
from .generation import wants
from .judge import dry_run_lines, has_judge_rules
from .nodes import row_of
from .prompts import build_prompt
from .rowid import RowId
from .state import BatchState


class DryRunPlugin:
    """Replaces the test loop: no item runs, nothing is sent, nothing is recorded."""

    def __init__(self, config: pytest.Config, state: BatchState) -> None:
        self.config = config
        self.state = state

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        state = self.state
        tw = terminal_writer(self.config)
        shown: set[RowId] = set()
        judged = False  # the judge prompts are shown for one row (they differ only in the output)
        # under xdist the controller has no items: then every selected row is shown
        found = [row_of(item) for item in session.items]
        candidates = [f for f in found if f is not None] if session.items else list(state.selected())
        tw.sep("-", "freshness and the estimated cost of (re)generating each row")
        for line in freshness_table(state, candidates):
            tw.line(line)
        for run, row in candidates:
            row_id = run.row_id(row)
            if not wants(state, run, row) or row_id in shown:
                continue
            shown.add(row_id)
            prompt = build_prompt(run.plan, row, state.settings.max_tokens)
            tw.sep("-", f"{row.filename} -> {prompt.model}")
            tw.line("system (shared, cached):")
            tw.line(prompt.system)
            tw.line("")
            tw.line("user:")
            tw.line(prompt.user)
            if not judged and has_judge_rules(run.rules):
                judged = True
                tw.line("")
                for line in dry_run_lines(run.plan, row, run.rules):
                    tw.line(line)
        if state.settings.api == "batches" and shown:  # what would be batched, and its price
            from .batches import dry_run_lines as batch_lines

            picked = {run.row_id(row): (run, row) for run, row in candidates if run.row_id(row) in shown}
            for line in batch_lines(list(picked.values()), state.prices, state.settings.max_tokens):
                tw.line(line)
        files = (("--batch-report", state.settings.report), ("--batch-summary", state.settings.summary))
        unwritten = [f"{option} {path}" for option, path in files if path]  # (from addopts: see settings)
        if unwritten:
            tw.line(f"not written (a dry run writes nothing): {', '.join(unwritten)}")
        tw.sep("-", f"dry run: {len(shown)} pending row(s); nothing sent, nothing written")
        return True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK  # a dry run runs no test by design (xdist)


def terminal_writer(config: pytest.Config) -> Any:
    """pytest's terminal writer; without its terminal reporter (``-p no:terminal``) a plain one
    on stdout: what a dry run prints is all it does (``config.get_terminal_writer()`` asserts)."""
    if config.pluginmanager.get_plugin("terminalreporter") is not None:
        return config.get_terminal_writer()
    from _pytest._io import TerminalWriter

    return TerminalWriter(sys.stdout)
