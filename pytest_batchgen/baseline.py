"""What a run changed: the previous output of each regenerated row is its baseline.

When a run regenerates rows that had an output (stale rows with ``--batch-regenerate-stale``,
record mode ``all``, a pending row whose output failed), :func:`capture` keeps, before the
dispatcher starts, each such output's text, the checks it failed, its recording's usage and
cost and its freshness. At the end of the session :func:`changes` sets them beside what the run
made: verdict and failed checks before and after, tokens and cost before and after, and a
unified diff. A row whose output passed before and whose new draft fails is a **regression**
(``--batch-fail-on-regression`` turns it into a non-zero exit).

"After" describes the new draft. With the drafts-aside protection a failing draft never
replaces a passing output: it stays in ``.batchgen-drafts/`` and the row's items go on checking
the old output, so the draft's verdict is taken from the generation's last attempt, and
``kept_previous`` says the output on disk is still the baseline.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .freshness import (
    Freshness,
    UnreadableRecording,
    book_of,
    read_recording,
    recorded_cost,
    regenerate_command,
)
from .outcomes import Outcome
from .plan import Row
from .run import PlanRun

if TYPE_CHECKING:
    from .dispatch import RowResult
    from .report import RowReport
    from .state import BatchState

#: a diff longer than this many lines is cut (the JSON report and the Markdown summary)
MAX_DIFF_LINES = 2000


@dataclass(frozen=True)
class Baseline:
    """A row's output as it was before this run regenerated it."""

    key: str
    text: str
    failed_checks: tuple[str, ...]
    freshness: Freshness
    usage: dict[str, int] | None
    cost: float | None


def capture(state: BatchState, rows: Sequence[tuple[PlanRun, Row]], afresh: set[str]) -> None:
    """Keep the baseline of each row of ``rows`` that has an output (before any draft is sent).

    The checks run here are the dispatcher's own first step (``draft_failures``): their
    verdicts are cached per output, so the dispatcher does not run them again."""
    book = book_of(state)
    for run, row in rows:
        path = run.output_path(row)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        key = run.row_id(row).key
        failed = tuple(rule.name for rule, _ in run.draft_failures(row))
        freshness = book.of(run.plan, row)
        usage = cost = None
        try:
            recording = read_recording(run.plan.cassette_path(row))
        except UnreadableRecording:
            recording = None
        if recording is not None:
            usage = recording.usage.as_dict()
            cost = round(recorded_cost(recording, state.prices.of(run.plan.path)), 6)
        book.baselines[key] = Baseline(key, text, failed, freshness, usage, cost)


def _diff(before: str, after: str, label: str) -> str:
    lines = list(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{label}", f"b/{label}"
        )
    )
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... ({len(lines) - MAX_DIFF_LINES} more lines)\n"]
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _names(failures: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(f.split(":", 1)[0] for f in failures))


@dataclass(frozen=True)
class Change:
    """A regenerated row: its baseline beside what this run made."""

    plan: str
    filename: str
    before: dict[str, Any]
    after: dict[str, Any]
    diff: str
    regression: bool
    freshness_before: Freshness

    def as_dict(self) -> dict[str, Any]:
        return {
            "freshness_before": self.freshness_before.as_dict(),
            "before": self.before,
            "after": self.after,
            "regression": self.regression,
            "diff": self.diff,
        }


def changes(state: BatchState, reports: Sequence[RowReport]) -> dict[str, Change]:
    """Each regenerated row with a baseline, by row key (computed once per session)."""
    book = book_of(state)
    if book.changes is not None:
        return book.changes
    found: dict[str, Change] = {}
    runs = {run.plan.rel(run.plan.path): run for run in state.runs}
    for r in reports:
        run = runs.get(r.plan)
        gen = r.generation
        if run is None or gen is None or not gen.attempts:
            continue  # not regenerated in this run (kept, skipped, not selected)
        key = run.row_id(r.row).key
        base = book.baselines.get(key)
        if base is None:
            continue
        found[key] = _change(run, r, base)
    book.changes = found
    return found


def _change(run: PlanRun, r: RowReport, base: Baseline) -> Change:
    gen = r.generation
    assert gen is not None
    plan, row = run.plan, r.row
    output = run.output_path(row)
    draft = plan.draft_path(row)
    now = output.read_text(encoding="utf-8") if output.exists() else ""
    kept_previous = gen.outcome != Outcome.PASSED and now == base.text and draft.exists()
    if kept_previous:
        new_text = draft.read_text(encoding="utf-8")
        failed_after = _names(gen.attempts[-1].failures) or [str(gen.outcome)]
        verdict_after = "failed"
    elif not gen.wrote:
        new_text = now
        failed_after = ["generate"]
        verdict_after = "failed"
    else:
        new_text = now
        # the row's items judged the new output (a registration or custom check included)
        failed_after = list(dict.fromkeys(f.check for f in r.failures))
        if gen.outcome != Outcome.PASSED and not failed_after:
            failed_after = _names(gen.attempts[-1].failures) or [str(gen.outcome)]
        verdict_after = "failed" if failed_after else "passed"
    passed_before = not base.failed_checks
    before = {
        "verdict": "passed" if passed_before else "failed",
        "failed_checks": list(base.failed_checks),
        "usage": base.usage,
        "cost_usd": base.cost,
    }
    after = {
        "verdict": verdict_after,
        "failed_checks": failed_after,
        "outcome": str(gen.outcome),
        "usage": gen.usage.as_dict(),
        "cost_usd": round(sum(a.would_cost for a in gen.attempts), 6),
        "kept_previous": kept_previous,
        "wrote": gen.wrote,  # False: no new draft (a replay miss, an API error): nothing changed
    }
    label = plan.rel(output)
    return Change(
        plan=r.plan,
        filename=row.filename,
        before=before,
        after=after,
        diff=_diff(base.text, new_text, label),
        regression=passed_before and verdict_after == "failed" and gen.wrote,  # a new draft that fails
        freshness_before=base.freshness,
    )


def freshness_now(state: BatchState, reports: Sequence[RowReport]) -> dict[str, Freshness]:
    """Each row's freshness at the end of the run: rows generated in it are judged again (most
    were already, as they ended: :func:`judge_generated`)."""
    book = book_of(state)
    runs = {run.plan.rel(run.plan.path): run for run in state.runs}
    out: dict[str, Freshness] = {}
    for r in reports:
        run = runs.get(r.plan)
        if run is None:
            continue
        if r.generation is not None and r.generation.attempts:
            judge_generated(state, run, r.row, r.generation)
        out[run.row_id(r.row).key] = book.of(run.plan, r.row)
    return out


def judge_generated(state: BatchState, run: PlanRun, row: Row, result: RowResult | None = None) -> None:
    """Judge again, once, the freshness of a row this run generated: its output and recording
    are final once its generation ended. Called as each row's ``generate`` item ends, so that
    the summary finds them judged (0.12 s at 1,000 rows, on the run's tail, before). A row that
    passed, whose recording opens with the request this run sent (``result.recorded_as_sent``),
    needs no read: its output is one of that request's replies. A row that did not pass is read:
    its draft may wait aside while an older output stays (``freshness.NOT_THE_REPLY``)."""
    book = book_of(state)
    plan = run.plan.rel(run.plan.path)
    if row.filename not in book.rejudged.get(plan, ()):
        book.forget(run.plan, row)
        book.rejudged.setdefault(plan, set()).add(row.filename)
        if result is not None and result.recorded_as_sent and result.outcome is Outcome.PASSED:
            book.sent_as_recorded(run.plan, row)
        else:
            book.of(run.plan, row)


def asks_for_changes(settings: Any) -> bool:
    """Whether the run was given one of the change-management options (issue 15)."""
    return bool(settings.fail_stale or settings.regenerate_stale or settings.fail_on_regression or settings.summary)


def annotate_json(document: dict[str, Any], state: BatchState, reports: Sequence[RowReport]) -> None:
    """Add each row's freshness and, for a regenerated row, its baseline to a JSON report.

    The keys are additions to schema v1 that a strict v1 reader does not know, so they are
    written when the run asked for change management (an issue-15 option) or regenerated a row
    that had an output (it has a baseline to show)."""
    changed = changes(state, reports)
    if not changed and not asks_for_changes(state.settings):
        return
    fresh = freshness_now(state, reports)
    runs = {run.plan.rel(run.plan.path): run for run in state.runs}
    by_row = {(r.plan, r.row.filename): r for r in reports}
    counts: dict[str, int] = {}
    for plan in document.get("plans", []):
        run = runs.get(plan["plan"])
        for row in plan["rows"]:
            r = by_row.get((plan["plan"], row["filename"]))
            if run is None or r is None:
                continue
            key = run.row_id(r.row).key
            f = fresh[key]
            counts[f.state] = counts.get(f.state, 0) + 1
            row["freshness"] = f.as_dict()
            change = changed.get(key)
            row["baseline"] = change.as_dict() if change is not None else None
    totals = document.setdefault("totals", {})
    totals["freshness"] = counts
    totals["regenerated_with_baseline"] = len(changed)
    totals["regressions"] = [f"{c.plan}::{c.filename}" for c in changed.values() if c.regression]


#: at most this many stale rows are named in the terminal summary
MAX_NAMED = 20


def summary_lines(state: BatchState, reports: Sequence[RowReport]) -> list[str]:
    """The terminal summary's lines about freshness and regenerated rows."""
    fresh = freshness_now(state, reports)
    counts: dict[str, int] = {}
    for f in fresh.values():
        counts[f.state] = counts.get(f.state, 0) + 1
    order = ("fresh", "stale", "unrecorded", "missing")
    lines = ["freshness: " + ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))] if fresh else []
    runs = {run.plan.rel(run.plan.path): run for run in state.runs}
    stale = [(r, fresh[runs[r.plan].row_id(r.row).key]) for r in reports if r.plan in runs]
    stale = [(r, f) for r, f in stale if f.stale]
    for r, f in stale[:MAX_NAMED]:
        lines.append(f"  stale: {r.plan}::{r.row.filename} ({', '.join(f.reasons)})")
    if len(stale) > MAX_NAMED:
        lines.append(f"  ... and {len(stale) - MAX_NAMED} more stale rows")
    if stale and not state.settings.regenerate_stale:
        plans = dict.fromkeys(runs[r.plan].plan.path for r, _ in stale)
        command = regenerate_command(plans, state.settings.credential is not None, state.settings.command_options())
        lines.append(f"  to regenerate them: {command}")
    for c in changes(state, reports).values():
        kept = ", previous output kept" if c.after["kept_previous"] else ""
        word = "REGRESSION" if c.regression else "regenerated" if c.after["wrote"] else "not regenerated"
        if not c.after["wrote"]:
            kept = ", the output is as it was"
        lines.append(
            f"{word}: {c.plan}::{c.filename}: {c.before['verdict']} -> {c.after['verdict']}{kept}"
            + (f" (failed: {', '.join(c.after['failed_checks'])})" if c.after["failed_checks"] else "")
        )
    return lines
