"""The RECORD step's pytest side: count each row's items, tally their reports, update the plan.

``pytest_runtest_makereport`` attaches a small plain-data payload (:class:`ReportPayload`) to
each report of a row's item, in the process that ran it; ``pytest_runtest_logreport`` sees
every report, from this process or from xdist workers, so the controller tallies all rows and
is the one process that records into the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path
from typing import Any, TypedDict

import pytest

from .fsutil import failed_file
from .nodes import CheckFailed, CheckItem, GenerateItem, PlanSkip, RowItem, row_of
from .plan import Row
from .planedit import apply_updates
from .report import RowReport, build_rows
from .results import ItemFailure, RowTally, plan_updates, without_addresses
from .rowid import RowId
from .run import PlanRun
from .settings import Role, redact
from .state import BatchState


class FailurePayload(TypedDict, total=False):
    check: str
    message: str
    checklist_line: int | None
    output: str | None
    output_line: int | None
    detail: str | None


class _PayloadBase(TypedDict):
    plan: str
    filename: str
    status: str
    expected: int
    partial: bool


class ReportPayload(_PayloadBase, total=False):
    """What a report carries about its row (``report.batchgen``); it crosses xdist as is."""

    failure: FailurePayload
    #: an xdist worker's judge calls of the row since its last report (JudgeAttempt.to_wire):
    #: the controller counts them (JudgeService.merge), as it does the ones it makes itself
    judge: list[dict[str, Any]]


#: a row's items: first the checks, registration (and other run-last rules) after the others
def _runs_last(item: pytest.Item) -> bool:
    return isinstance(item, CheckItem) and item.rule.form.runs_last


class TallyPlugin:
    """Item counts, the tally of reports by row, and the plan update at the end."""

    def __init__(self, state: BatchState) -> None:
        self.state = state
        self.tallies: dict[RowId, RowTally] = {}
        self.item_counts: dict[RowId, int] = {}  # items collected per row
        self.partial: set[RowId] = set()  # rows with a deselected item
        self.recorded: dict[Path, bool] = {}  # plan -> whether the plan's bytes changed
        #: plan -> why it could not be written (an OSError: a read-only folder or file, a full disk)
        self.not_recorded: dict[Path, str] = {}
        self.interrupted = False  # Ctrl-C: nothing recorded, and the summary says so
        #: xdist ends a run stopped by ``-x``/``--maxfail`` with its own KeyboardInterrupt
        #: (``Interrupted("stopping after N failures")``): a stop at a failure, recorded like
        #: plain ``-x``, not a Ctrl-C
        self._stopped_at_failure = False
        self._ids: dict[tuple[str, str], RowId] = {}  # a report's (plan, filename) -> its row

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """Deselect the items outside the rows named on the command line (before ``-k``/``-m``
        deselect theirs), count each row's items, and put run-last rules after the others."""
        selection = self.state.selection
        if selection is not None and (selection.filters or selection.filtered_plans):
            # with a custom test named by node id, the tests of the batchgen_checks paths are
            # collected whole: those it names stay, with the items of their rows
            in_checks: dict[pytest.Item, bool] = {}  # such a test -> whether it is named
            named_rows: set[RowId] = set()
            if selection.check_nodes:
                found_args: set[str] = set()
                for item in items:
                    if not isinstance(item, RowItem):
                        path = Path(item.path).resolve()
                        if selection.in_checks(path):
                            named_by = selection.named_by(path, item.nodeid)
                            found_args.update(named_by)
                            in_checks[item] = bool(named_by)
                            found = row_of(item)
                            if named_by and found is not None:
                                named_rows.add(found[0].row_id(found[1]))
                missing = [a for _, _, a in selection.check_nodes if a not in found_args]
                if missing:  # as pytest says it of a node id that matches nothing
                    raise pytest.UsageError("\n".join(f"not found: {a}" for a in missing))
            kept, dropped = [], []
            for item in items:
                found = row_of(item)
                name = item.name if isinstance(item, RowItem) else None  # a rule's name, generate, fresh
                if item in in_checks:  # named, or a custom test of a row named in its plan
                    keep = in_checks[item] or (found is not None and selection.keeps(found[0].row_id(found[1]), None))
                elif found is None:
                    keep = True
                else:
                    row_id = found[0].row_id(found[1])
                    keep = selection.keeps(row_id, name) or row_id in named_rows
                if keep:
                    kept.append(item)
                else:
                    dropped.append(item)
            if dropped:
                config.hook.pytest_deselected(items=dropped)
                items[:] = kept
        for item in items:
            found = row_of(item)
            if found:
                row_id = found[0].row_id(found[1])
                self.item_counts[row_id] = self.item_counts.get(row_id, 0) + 1
        items.sort(key=_runs_last)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            found = row_of(item)
            if found:
                self.partial.add(found[0].row_id(found[1]))
                if not isinstance(item, RowItem):  # a custom test: the output is not registered
                    found[0].tests_deselected.add(found[1].filename)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        skip = call.excinfo.value if call.excinfo is not None else None
        if isinstance(skip, PlanSkip) and report.skipped and isinstance(report.longrepr, tuple):
            report.longrepr = (*skip.plan_location, f"Skipped: {skip.msg}")  # at the plan's line
        # a passing setup or teardown counts for nothing: no payload (fewer bytes per item,
        # retained by pytest's reports and sent across xdist)
        if report.when != "call" and report.passed:
            return report
        found = row_of(item)
        if found is not None:
            report.batchgen = self._payload(item, call, report, *found)  # type: ignore[attr-defined]
            if report.failed and not isinstance(item, RowItem):  # a custom test of the row
                found[0].tests_failed.add(found[1].filename)
            elif report.skipped and not isinstance(item, RowItem):
                found[0].tests_skipped.setdefault(found[1].filename, _skipped_test(item.name, report))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        info: ReportPayload | None = getattr(report, "batchgen", None)
        if not info:
            return
        named = (info["plan"], info["filename"])
        row_id = self._ids.get(named)
        if row_id is None:  # a row's first report: a Path per report cost more than the tally
            row_id = self._ids[named] = RowId(Path(info["plan"]), info["filename"])
        tally = self.tallies.get(row_id)
        if tally is None:
            tally = self.tallies[row_id] = RowTally(filename=info["filename"], status_before=info["status"])
        judged = info.get("judge")
        if judged and self.state.judge is not None and self.state.settings.role is not Role.WORKER:
            self.state.judge.merge(row_id.key, judged)
        tally.expected = max(tally.expected, info["expected"])
        tally.partial = tally.partial or info["partial"]
        if report.failed:
            failure = info.get("failure") or {"check": "?", "message": "failed"}
            tally.failures.append(_scrubbed(ItemFailure(**failure), self.state.settings.secrets))
        elif report.skipped and report.when in ("setup", "call"):
            tally.skipped += 1
        elif report.passed and report.when == "call":
            tally.passed += 1

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        exc = excinfo.value
        self._stopped_at_failure = type(exc).__module__.startswith("xdist") and str(exc).startswith("stopping after")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Record into the plans: after the generation finished (its ``tryfirst`` hook)."""
        settings = self.state.settings
        if settings.role is Role.WORKER or settings.readonly or settings.dry_run:
            return
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED and not self._stopped_at_failure
        if interrupted or exitstatus == pytest.ExitCode.USAGE_ERROR:
            self.interrupted = interrupted
            return
        for run in self.state.runs:
            updates = plan_updates(self.tallies_of(run))
            try:
                self.recorded[run.plan.path] = apply_updates(run.plan.path, updates)
            except (OSError, UnicodeDecodeError) as exc:  # the other plans are recorded, the reports written
                self.not_recorded[run.plan.path] = _not_written(run, exc)
        if self.not_recorded and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def row_reports(self) -> list[RowReport]:
        """Every selected row's report: statuses, verdict, generation and failures."""
        state = self.state
        results = state.results()
        # statuses as the plan has them: an interrupted run records nothing
        frozen = state.settings.readonly or state.settings.dry_run or state.settings.collect_only or self.interrupted
        reports: list[RowReport] = []
        for run in state.runs:
            reports += build_rows(
                run.plan.rel(run.plan.path),
                run.rows,
                self.tallies_of(run),
                results,
                lambda row, run=run: run.row_id(row).key,  # type: ignore[misc]
                frozen or run.plan.path in self.not_recorded,  # a plan not written keeps its statuses
                state.judge.attempts if state.judge is not None else None,
                plan_path=run.plan.path,
            )
        return reports

    def tallies_of(self, run: PlanRun) -> dict[str, RowTally]:
        """One plan's tallies by filename (how the plan editor and the reports name its rows)."""
        return {row_id.filename: t for row_id, t in self.tallies.items() if row_id.plan == run.plan.path}

    def _payload(
        self, item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport, run: PlanRun, row: Row
    ) -> ReportPayload:
        row_id = run.row_id(row)
        info: ReportPayload = {
            "plan": str(run.plan.path),
            "filename": row.filename,
            "status": row.status,
            "expected": self.item_counts.get(row_id, 0),
            "partial": row_id in self.partial,
        }
        if report.failed:
            info["failure"] = _failure(item, call, report, run, row)
        judge = self.state.judge
        if judge is not None and self.state.settings.role is Role.WORKER:  # the controller reports them
            judged = judge.unsent(row_id.key)
            if judged:
                info["judge"] = judged
        return info


def _skipped_test(name: str, report: pytest.TestReport) -> str:
    """Why a custom test of a row did not pass, for its ``registered`` item: its skip reason, or
    its xfail's."""
    if hasattr(report, "wasxfail"):
        why = f"expected to fail{': ' + report.wasxfail if report.wasxfail else ''}"
        return f"the custom test {name} xfailed ({why})"
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    reason = reason.removeprefix("Skipped: ")
    return f"the custom test {name} was skipped" + (f" ({reason})" if reason else "")


def _scrubbed(failure: ItemFailure, secrets: tuple[str, ...]) -> ItemFailure:
    """A failure without the credentials in its text: every failure, from this process or an
    xdist worker, enters the tally here, and the plan's notes, the JSON report, the step summary
    and the CI annotations are made from the tally."""
    if not secrets:
        return failure
    detail = redact(failure.detail, secrets) if failure.detail else failure.detail
    return dataclasses.replace(failure, message=redact(failure.message, secrets), detail=detail)


def _not_written(run: PlanRun, exc: OSError | UnicodeDecodeError) -> str:
    """Why the plan was not updated, and the fix: the summary's line for it."""
    from filelock import Timeout

    if isinstance(exc, UnicodeDecodeError):  # saved in another encoding while the run went on
        return (
            f"it is no longer UTF-8 text ({exc.reason} at byte {exc.start}: saved in another encoding during "
            "the run?); save it as UTF-8, then run again"
        )
    if isinstance(exc, Timeout):  # not a permission: another process holds the lock
        return (
            f"another process holds its lock ({run.plan.rel(Path(exc.lock_file))}: a run still going, or "
            "stopped?); run again once it ends"
        )
    path = failed_file(exc)
    where = f": {run.plan.rel(path)}" if path is not None else ""
    folder = run.plan.rel(run.plan.path.parent) or "."
    return (
        f"{exc.strerror or exc}{where}; make {folder}/ and the plan writable (the plugin writes the plan "
        "through a temporary file and a lock file beside it), then run again"
    )


def _failure(
    item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport, run: PlanRun, row: Row
) -> FailurePayload:
    """What the plan's note and the reports say about a failed item."""
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(item, CheckItem) and isinstance(exc, CheckFailed):
        return {
            "check": item.rule.name,
            "message": exc.failure.message,
            "checklist_line": item.rule.line,
            "output": run.plan.rel(run.output_path(row)),
            "output_line": exc.failure.line,
            "detail": exc.failure.detail or None,
        }
    if isinstance(item, GenerateItem) and exc is not None:
        return {"check": "generate", "message": str(exc)}
    if getattr(exc, "batchgen_check", None):  # an item of another concern (stalegate's "fresh")
        return {"check": str(exc.batchgen_check), "message": str(exc), "output": run.plan.rel(run.output_path(row))}  # type: ignore[union-attr]
    if call.excinfo is not None:
        message = call.excinfo.exconly().strip()
    else:
        lines = report.longreprtext.strip().splitlines()
        message = lines[-1] if lines else "failed"
    # addresses out before the cut, so that the cut falls at the same place on every run
    failure: FailurePayload = {"check": item.name, "message": " ".join(without_addresses(message).split())[:300]}
    if isinstance(item, CheckItem):  # its check raised: still a checklist line's failure, on its output
        failure["check"] = item.rule.name
        failure["checklist_line"] = item.rule.line
        failure["output"] = run.plan.rel(run.output_path(row))
    return failure
