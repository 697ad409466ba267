"""The run in Markdown, for a pull request: rows, verdicts, freshness, cost, regressions, diffs.

Written at the end of the session to ``--batch-summary PATH`` and appended to the file named by
``$GITHUB_STEP_SUMMARY`` when that is set (GitHub Actions shows it on the run's page), so a
pull request that changes a plan shows which outputs it made stale, what regenerating them
cost and what changed in them. The diffs are folded in ``<details>``.

The same plugin applies ``--batch-fail-on-regression``: a regenerated row that passed before
and fails now turns the exit status to "tests failed".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from .baseline import Change, changes, freshness_now
from .freshness import STATES, Freshness
from .fsutil import write_through
from .planedit import code_span
from .pricing import PlanPrices
from .report import RowReport, plural, totals
from .settings import redact
from .state import BatchState
from .tally import TallyPlugin


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _cost(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def markdown(
    reports: Sequence[RowReport],
    fresh: Mapping[tuple[str, str], Freshness],
    changed: Sequence[Change],
    prices: PlanPrices,
    *,
    title: str = "pytest-batchgen",
) -> str:
    """The summary document (GitHub-flavoured Markdown)."""
    lines = [f"## {title}", ""]
    t = totals(reports, prices)
    states = {s: 0 for s in STATES}
    for f in fresh.values():
        states[f.state] = states.get(f.state, 0) + 1
    regressions = [c for c in changed if c.regression]
    lines.append(
        f"**{plural(t.rows, 'row')}**: {t.verdicts()}"
        + f"; {plural(t.attempts, 'call')} ({t.live} live, {t.replayed} replayed); estimated cost **${t.cost:.4f}**"
    )
    lines.append("")
    lines.append("Freshness: " + ", ".join(f"{n} {s}" for s, n in states.items() if n) + ".")
    lines.append("")
    if regressions:
        lines.append(f"### :x: {len(regressions)} regression(s)")
        lines.append("")
        for c in regressions:
            failed = ", ".join(c.after["failed_checks"]) or c.after["outcome"]
            lines.append(f"- {code_span(f'{c.plan}::{c.filename}')}: passed before, fails now ({_cell(failed)})")
        lines.append("")
    lines += [
        "| plan | file | model | status | verdict | freshness | calls | cost | failed checks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        now = fresh.get((r.plan, r.row.filename))
        state = "-" if now is None else (now.state + (f" ({', '.join(now.reasons)})" if now.stale else ""))
        calls = str(len(r.attempts)) if r.generation is not None else "-"
        failed = ", ".join(dict.fromkeys(x.check for x in r.failures)) or "-"
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    r.plan,
                    r.row.filename,
                    r.row.model,
                    f"{r.status_before} → {r.status_after}",
                    str(r.verdict),
                    state,
                    calls,
                    _cost(r.cost) if r.generation is not None or r.judge else "-",  # a judge's calls too
                    failed,
                )
            )
            + " |"
        )
    lines.append("")
    if changed:
        lines.append(f"### Regenerated rows ({len(changed)})")
        lines.append("")
        for c in changed:
            reasons = ", ".join(c.freshness_before.reasons)
            why = f"; stale: {reasons}" if c.freshness_before.stale else ""
            kept = " (new draft set aside; previous output kept)" if c.after["kept_previous"] else ""
            head = (
                f"{c.plan}::{c.filename}: {c.before['verdict']} → {c.after['verdict']}{kept}{why}; "
                f"cost {_cost(c.before['cost_usd'])} → {_cost(c.after['cost_usd'])}"
            )
            lines.append("<details>")
            lines.append(f"<summary>{_html(head)}</summary>")
            lines.append("")
            if c.before["failed_checks"] or c.after["failed_checks"]:
                lines.append(
                    f"Failed checks before: {', '.join(c.before['failed_checks']) or 'none'}; "
                    f"after: {', '.join(c.after['failed_checks']) or 'none'}."
                )
                lines.append("")
            diff = c.diff or "(no change)\n"
            fence = _fence(diff)
            lines.append(f"{fence}diff")
            lines.append(diff.rstrip("\n"))
            lines.append(fence)
            lines.append("</details>")
            lines.append("")
    return "\n".join(lines) + "\n"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class RunSummaryPlugin:
    """Writes the Markdown summary and applies ``--batch-fail-on-regression`` (not on workers,
    not in a dry run)."""

    def __init__(self, state: BatchState, tally: TallyPlugin) -> None:
        self.state = state
        self.tally = tally

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.state
        settings = state.settings
        targets: list[tuple[Path, bool]] = []
        if settings.summary is not None:
            targets.append((settings.summary, False))
        step = os.environ.get("GITHUB_STEP_SUMMARY")
        if step:
            targets.append((Path(step), True))
        if not targets and not settings.fail_on_regression:
            return
        reports = self.tally.row_reports()
        changed = list(changes(state, reports).values())
        regressed = any(c.regression for c in changed)
        if settings.fail_on_regression and regressed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if not targets:
            return
        fresh_by_key = freshness_now(state, reports)
        runs = {run.plan.rel(run.plan.path): run for run in state.runs}
        fresh = {
            (r.plan, r.row.filename): fresh_by_key[runs[r.plan].row_id(r.row).key] for r in reports if r.plan in runs
        }
        text = redact(markdown(reports, fresh, changed, state.prices), settings.secrets)  # (the diffs, errors)
        for path, append in targets:
            try:
                if append:
                    with path.open("a", encoding="utf-8") as fh:
                        fh.write(text)
                else:
                    write_through(path, text)  # a symlink followed, a FIFO or device written
            except OSError as exc:  # a bad $GITHUB_STEP_SUMMARY fails no run whose tests passed
                name = "$GITHUB_STEP_SUMMARY" if append else "--batch-summary"
                state.end_warnings.append(
                    f"{name} {path}: the summary was not written ({exc.strerror or exc}); the run's result is unchanged"
                )
